/// The images, networks and hosts pages: tables of what the API lists.
enum ScriptResources {
    static let source = #"""
        // A page that lists one kind of resource, read again every `interval` ms.
        function listPage(pattern, name, title, subtitle, load, interval) {
          page(pattern, name, async root => {
            const body = el("section", { class: "card", id: name + "-list" });
            root.append(pageHead(title, subtitle), body);
            await router.every(interval, async () => body.replaceChildren(await load()));
          });
        }

        listPage(/^\/ui\/images$/, "images", "Images", "Unikernel images you can boot.", async () => {
          const images = (await api("GET", "/images")).images;
          return table(["Name", "Kind", "Size", "Visibility", "Tags", "Properties", "Created"], images.map(image =>
            el("tr", { "data-id": image.id },
              el("td", {}, el("strong", {}, image.name), el("div", { class: "muted mono" }, image.id)),
              el("td", {}, image.kind), el("td", {}, bytes(image.sizeBytes)), el("td", {}, image.visibility || "private"),
              el("td", {}, (image.tags || []).join(", ") || "–"),
              el("td", { class: "mono" }, Object.entries(image.properties || {}).map(([k, v]) => el("div", {}, k + "=" + v))),
              el("td", {}, when(image.createdAt)))), "No images yet: upload one with swiftlet image upload.");
        }, 5000);

        listPage(/^\/ui\/networks$/, "networks", "Networks", "Private networks instances attach to.", async () => {
          const networks = (await api("GET", "/networks")).networks;
          return table(["Name", "CIDR", "Gateway", "Mode", "MTU", "Bridge", "VNI"], networks.map(network =>
            el("tr", { "data-id": network.id },
              el("td", {}, el("strong", {}, network.name)), el("td", { class: "mono" }, network.cidr),
              el("td", { class: "mono" }, network.gateway), el("td", {}, network.mode), el("td", {}, network.mtu),
              el("td", { class: "mono" }, network.bridge), el("td", {}, network.vni))), "No networks yet.");
        }, 5000);

        listPage(/^\/ui\/hosts$/, "hosts", "Hosts", "Compute hosts, their capacity and their leases.", async () => {
          const [hostList, instanceList] = await Promise.all([api("GET", "/hosts"), api("GET", "/instances")]);
          return table(["Host", "State", "Lease", "vCPUs", "Memory", "Accelerator", "Hypervisor"], hostList.hosts.map(host => {
            const usage = hostUsage(host, instanceList.instances);
            return el("tr", { "data-id": host.id },
              el("td", {}, el("strong", {}, host.name), el("div", { class: "muted mono" }, host.id)),
              el("td", {}, badge(host.status || "UP"), " ", host.cordoned ? badge("cordoned") : null),
              el("td", {}, leaseText(host)),
              el("td", {}, bar("", usage.vcpus, host.cpus, String)),
              el("td", {}, bar("", usage.memoryMib, host.memoryMib, mib)),
              el("td", {}, host.chosenAccelerator),
              el("td", {}, (host.hypervisors || []).join(", ") + " " + host.hypervisorVersion));
          }), "No hosts.");
        }, 3000);
        """#
}
