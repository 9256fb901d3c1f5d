/// The instance list: filter, create, and start, stop or delete each one.
enum ScriptInstances {
    static let source = #"""
        // POST an action, then redraw what shows it; a failure is said in the toast.
        async function act(instance, action, after) {
          try {
            if (action === "delete") await api("DELETE", "/instances/" + encodeURIComponent(instance.id));
            else await api("POST", "/instances/" + encodeURIComponent(instance.id) + "/" + action);
            toast((action === "delete" ? "Deleting " : action === "start" ? "Starting " : "Stopping ") + instance.name);
          } catch (error) {
            if (error.status !== 401) toast(action + " " + instance.name + ": " + error.message, true);
          }
          await after();
        }

        // Start, stop and delete as the state allows; delete asks once more on the same button.
        function actionButtons(instance, after) {
          const buttons = [];
          if (["STOPPED", "ERROR"].includes(instance.state)) {
            buttons.push(el("button", { class: "small", "data-action": "start", onclick: () => act(instance, "start", after) }, "Start"));
          }
          if (["RUNNING", "PAUSED", "BUILDING"].includes(instance.state)) {
            buttons.push(el("button", { class: "small", "data-action": "stop", onclick: () => act(instance, "stop", after) }, "Stop"));
          }
          const remove = el("button", { class: "small danger", "data-action": "delete" }, "Delete");
          remove.addEventListener("click", () => {
            if (remove.dataset.armed === "yes") { remove.disabled = true; act(instance, "delete", after); return; }
            remove.dataset.armed = "yes";
            remove.textContent = "Confirm delete";
          });
          buttons.push(remove);
          return buttons;
        }

        function instanceRow(instance, names, after) {
          return el("tr", { "data-id": instance.id, "data-name": instance.name, "data-state": instance.state },
            el("td", {}, link(instancePath(instance.id), instance.name)),
            el("td", {}, badge(instance.state)),
            el("td", {}, names.images[instance.imageId] || instance.imageId),
            el("td", {}, (instance.flavor || "custom") + " · " + instance.vcpus + " vCPU · " + mib(instance.memoryMib)),
            el("td", {}, names.hosts[instance.hostId] || instance.hostId || "–"),
            el("td", { class: "mono" }, ms(bootNanos(instance))),
            el("td", {}, when(instance.createdAt)),
            el("td", { class: "actions" }, actionButtons(instance, after)));
        }

        function matches(instance, text, state, names) {
          if (state && instance.state !== state) return false;
          if (!text) return true;
          const haystack = [instance.name, instance.id, names.images[instance.imageId] || "", names.hosts[instance.hostId] || ""];
          return haystack.some(value => value.toLowerCase().includes(text));
        }

        function createForm(images, flavors, created) {
          const name = el("input", { id: "create-name", placeholder: "name (optional)", maxlength: 63 });
          const image = el("select", { id: "create-image" }, images.map(i => el("option", { value: i.id }, i.name + " (" + i.kind + ")")));
          const flavor = el("select", { id: "create-flavor" },
            flavors.map(f => el("option", { value: f.name }, f.name + " · " + f.vcpus + " vCPU · " + mib(f.memoryMib))));
          const button = el("button", { type: "submit", class: "primary", id: "create-submit" }, "Create instance");
          const form = el("form", { class: "toolbar", id: "create-form" },
            el("div", { class: "field" }, el("label", { for: "create-name" }, "Name"), name),
            el("div", { class: "field" }, el("label", { for: "create-image" }, "Image"), image),
            el("div", { class: "field" }, el("label", { for: "create-flavor" }, "Size"), flavor),
            button);
          form.addEventListener("submit", async event => {
            event.preventDefault();
            const body = { image: image.value, flavor: flavor.value };
            if (name.value.trim()) body.name = name.value.trim();
            button.disabled = true;
            try {
              const answer = await api("POST", "/instances", body);
              toast("Created " + answer.instances.map(i => i.name).join(", "));
              name.value = "";
            } catch (error) {
              if (error.status !== 401) toast("Create: " + error.message, true);
            }
            button.disabled = false;
            await created();
          });
          if (images.length === 0) { button.disabled = true; button.title = "Upload an image first (swiftlet image upload)"; }
          return form;
        }

        page(/^\/ui\/instances$/, "instances", async root => {
          const [images, flavors, hosts] = await Promise.all([api("GET", "/images"), api("GET", "/flavors"), api("GET", "/hosts")]);
          const names = {
            images: Object.fromEntries(images.images.map(i => [i.id, i.name])),
            hosts: Object.fromEntries(hosts.hosts.map(h => [h.id, h.name])),
          };
          const filter = el("input", { id: "filter", type: "search", placeholder: "Filter by name, id, image or host" });
          const state = el("select", { id: "filter-state" }, el("option", { value: "" }, "any state"),
            ["RUNNING", "BUILDING", "PAUSED", "STOPPED", "ERROR", "UNKNOWN"].map(s => el("option", { value: s }, s)));
          const count = el("span", { class: "muted", id: "instance-count" });
          const list = el("div", { id: "instance-list" });
          let instances = [], shown = null;
          const draw = () => {
            const text = filter.value.trim().toLowerCase();
            const rows = instances.filter(i => matches(i, text, state.value, names)).map(i => instanceRow(i, names, refresh));
            count.textContent = rows.length + " of " + instances.length + " instances";
            list.replaceChildren(table(["Name", "State", "Image", "Size", "Host", "Boot", "Created", ""], rows,
              instances.length ? "No instance matches the filter." : "No instances yet."));
          };
          // Redraws only when the list changed, so that a 1,000-row table is not rebuilt every tick.
          const refresh = async () => {
            const answer = await api("GET", "/instances");
            const key = JSON.stringify(answer.instances);
            if (key === shown) return;
            shown = key;
            instances = answer.instances;
            draw();
          };
          filter.addEventListener("input", draw);
          state.addEventListener("change", draw);
          root.append(pageHead("Instances", "Every instance you can see, refreshed every 2 s."),
            el("section", { class: "card" }, el("h2", {}, "New instance"), createForm(images.images, flavors.flavors, refresh)),
            el("section", { class: "card" },
              el("div", { class: "toolbar" }, filter, state, count), list));
          await router.every(2000, refresh);
        });
        """#
}
