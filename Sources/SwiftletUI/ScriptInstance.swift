/// One instance: its facts, the waterfall of its boot phases (the timeline `swiftlet show`
/// prints), its live console, its events and its migrations.
enum ScriptInstance {
    static let source = #"""
        const phaseLabels = {
          accepted: "accepted", persisted: "persisted", scheduled: "scheduled", imageReady: "image ready",
          vmmSpawned: "VMM spawned", vmmUp: "VMM up", ready: "guest READY",
        };

        // The phases in the order they happened; each lasts from the phase just before it in time.
        function phasesInTimeOrder(timeline) {
          return Object.keys(phaseLabels).map((phase, index) => [phase, timeline[phase], index])
            .filter(([, time]) => time !== null && time !== undefined)
            .sort((a, b) => a[1] - b[1] || a[2] - b[2]);
        }

        function waterfall(timeline) {
          const phases = phasesInTimeOrder(timeline || {});
          if (phases.length === 0) return el("p", { class: "empty" }, "No phase recorded yet.");
          const start = timeline.accepted ?? phases[0][1];
          const span = Math.max(1, phases[phases.length - 1][1] - start);
          const rows = phases.map(([phase, time], i) => {
            const from = i === 0 ? start : phases[i - 1][1];
            const segment = el("span", { class: "segment" + (phase === "ready" ? " ready" : "") });
            segment.style.left = ((from - start) / span * 100).toFixed(2) + "%";
            segment.style.width = ((time - from) / span * 100).toFixed(2) + "%";
            return [el("span", { "data-phase": phase }, phaseLabels[phase]),
              el("div", { class: "track", title: "+" + ms(time - start) + " after accepted" }, segment),
              el("span", { class: "ms mono" }, ms(time - from))];
          });
          const total = timeline.ready != null && timeline.accepted != null ? timeline.ready - timeline.accepted : null;
          return el("div", {},
            el("div", { class: "waterfall", id: "waterfall" }, rows),
            el("p", { class: "muted" }, "accepted → READY: ", el("strong", { id: "boot-total" }, ms(total)),
              timeline.bootPath ? " · " + timeline.bootPath + " boot" : ""));
        }

        function facts(instance, names) {
          const addresses = (instance.ports || []).map(p => p.address + (p.networkName ? " on " + p.networkName : "")).join(", ");
          const published = (instance.publishedPorts || []).map(p => p.hostPort + "→" + p.guestPort + "/" + p.proto).join(", ");
          const rows = [
            ["ID", instance.id], ["Image", names.images[instance.imageId] || instance.imageId], ["Size", (instance.flavor || "custom") + " · " +
              instance.vcpus + " vCPU · " + mib(instance.memoryMib)], ["Host", names.hosts[instance.hostId] || instance.hostId || "–"],
            ["Config", (instance.args || []).join(" ") || "–"], ["Restart policy", instance.restartPolicy],
            ["Restarts", instance.restartCount], ["Addresses", addresses || "–"], ["Published ports", published || "–"],
            ["Reason", instance.reason || "–"], ["Created", when(instance.createdAt)], ["Updated", when(instance.updatedAt)],
          ];
          return el("dl", { class: "facts" }, rows.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
        }

        function eventsTable(events) {
          return table(["Time", "Type", "Message"], events.slice().reverse().map(e =>
            el("tr", {}, el("td", {}, when(e.time)), el("td", {}, e.type), el("td", {}, e.message))), "No events yet.");
        }

        function migrationsTable(list, names) {
          return table(["Started", "From", "To", "Status", "Downtime", "Total"], list.map(m =>
            el("tr", { title: m.reason || "" }, el("td", {}, when(m.createdAt)),
              el("td", {}, names.hosts[m.sourceHostId] || m.sourceHostId),
              el("td", {}, names.hosts[m.targetHostId] || m.targetHostId), el("td", {}, m.status),
              el("td", { class: "mono" }, m.downtimeMs != null ? m.downtimeMs + " ms" : "–"),
              el("td", { class: "mono" }, m.totalMs != null ? ms(m.totalMs * 1e6) : "–"))),
            "No migrations: this instance has stayed on its host.");
        }

        page(/^\/ui\/instances\/([^/]+)$/, "instances", async (root, id) => {
          const path = "/instances/" + encodeURIComponent(id);
          const [hosts, images] = await Promise.all([api("GET", "/hosts"), api("GET", "/images")]);
          const names = {
            hosts: Object.fromEntries(hosts.hosts.map(h => [h.id, h.name])),
            images: Object.fromEntries(images.images.map(i => [i.id, i.name])),
          };
          const head = el("div"), factsBox = el("div"), phases = el("div", { id: "phases" }), events = el("div", { id: "events" });
          const migrations = el("div", { id: "migrations" });
          const console_ = el("pre", { class: "console", id: "console" }, "");
          const consoleNote = el("p", { class: "muted", id: "console-note" }, "");
          root.append(head,
            el("div", { class: "split" },
              el("section", { class: "card" }, el("h2", {}, "Boot phases"), phases),
              el("section", { class: "card" }, el("h2", {}, "Details"), factsBox)),
            el("section", { class: "card" }, el("h2", {}, "Console"), console_, consoleNote),
            el("div", { class: "split" },
              el("section", { class: "card" }, el("h2", {}, "Events"), events),
              el("section", { class: "card" }, el("h2", {}, "Migrations"), migrations)));
          let shown = null;
          const refresh = async () => {
            let instance;
            try { instance = await api("GET", path); } catch (error) {
              if (error.status === 404) {
                router.stop();
                head.replaceChildren(pageHead("Instance deleted", "It is gone. ", link("/ui/instances", "Back to the instances")));
                return;
              }
              throw error;
            }
            const [eventList, moves] = await Promise.all([api("GET", path + "/events"),
              api("GET", "/migrations?instance=" + encodeURIComponent(instance.id))]);
            const key = JSON.stringify([instance, eventList, moves]);
            if (key === shown) return;
            shown = key;
            head.replaceChildren(pageHead(instance.name, instance.id,
              el("div", {}, el("span", { id: "state" }, badge(instance.state)), " ",
                actionButtons(instance, refresh))));
            phases.replaceChildren(waterfall(instance.timeline));
            factsBox.replaceChildren(facts(instance, names));
            events.replaceChildren(eventsTable(eventList.events));
            migrations.replaceChildren(migrationsTable(moves.migrations, names));
          };
          // The console as the API keeps it, read again every second while the page is open.
          const readConsole = async () => {
            let text;
            try { text = await api("GET", path + "/console"); } catch (error) {
              if (error.status === 401) throw error;
              consoleNote.textContent = "Console unavailable: " + error.message;
              return;
            }
            consoleNote.textContent = "";
            if (console_.textContent === text) return;
            const atBottom = console_.scrollTop + console_.clientHeight >= console_.scrollHeight - 4;
            console_.textContent = text;
            if (atBottom) console_.scrollTop = console_.scrollHeight;
          };
          await Promise.all([router.every(1500, refresh), router.every(1000, readConsole)]);
        });
        """#
}
