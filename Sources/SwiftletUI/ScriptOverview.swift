/// The overview: instances counted by state, and each host with its capacity and lease.
enum ScriptOverview {
    static let source = #"""
        // States whose instances hold their vCPUs and memory on their host (as the scheduler counts them).
        const liveStates = ["BUILDING", "RUNNING", "PAUSED", "UNKNOWN"];

        function hostUsage(host, instances) {
          const usage = { vcpus: 0, memoryMib: 0, count: 0 };
          for (const instance of instances) {
            if (instance.hostId !== host.id || !liveStates.includes(instance.state)) continue;
            usage.vcpus += instance.vcpus;
            usage.memoryMib += instance.memoryMib;
            usage.count += 1;
          }
          return usage;
        }

        function leaseText(host) {
          if (!host.lastSeenAt) return host.status === "UP" ? "local host, lease held by this server" : "no lease";
          const seconds = Math.max(0, (Date.now() - new Date(host.lastSeenAt).getTime()) / 1000);
          return "lease renewed " + seconds.toFixed(0) + " s ago";
        }

        function hostCard(host, instances) {
          const usage = hostUsage(host, instances);
          return el("section", { class: "card host", "data-host": host.id },
            el("div", { class: "host-head" }, el("strong", {}, host.name),
              el("span", {}, badge(host.status || "UP"), " ", host.cordoned ? badge("cordoned") : null)),
            el("p", { class: "muted" }, leaseText(host), " · ", host.chosenAccelerator, " · ",
              usage.count + " live instance" + (usage.count === 1 ? "" : "s")),
            bar("vCPUs", usage.vcpus, host.cpus, String),
            bar("Memory", usage.memoryMib, host.memoryMib, mib));
        }

        function stateCounts(instances) {
          const counts = {};
          for (const instance of instances) counts[instance.state] = (counts[instance.state] || 0) + 1;
          const states = ["RUNNING", "BUILDING", "PAUSED", "STOPPED", "ERROR", "UNKNOWN"];
          return [el("div", { class: "stat-box" }, el("div", { class: "stat", "data-count": "total" }, instances.length),
              el("div", { class: "muted" }, "total"))]
            .concat(states.map(state => el("div", { class: "stat-box" },
              el("div", { class: "stat", "data-count": state }, counts[state] || 0), badge(state))));
        }

        page(/^\/ui$/, "overview", async root => {
          const states = el("div", { class: "stats" }), hosts = el("div", { class: "grid" });
          root.append(pageHead("Overview", "Hosts with their capacity and lease, and instances by state."),
            el("section", { class: "card" }, el("h2", {}, "Instances by state"), states),
            el("h2", {}, "Hosts"), hosts);
          await router.every(3000, async () => {
            const [hostList, instanceList] = await Promise.all([api("GET", "/hosts"), api("GET", "/instances")]);
            states.replaceChildren(...stateCounts(instanceList.instances));
            hosts.replaceChildren(...hostList.hosts.map(host => hostCard(host, instanceList.instances)));
          });
        });
        """#
}
