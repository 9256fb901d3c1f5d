/// Building blocks: elements from text (never from markup), the API call with the token, the toast.
enum ScriptCore {
    static let source = #"""
        "use strict";

        // The pages: a path pattern (its groups are the page's arguments), the nav entry it lights, its drawing.
        const pages = [];
        function page(pattern, name, draw) { pages.push({ pattern, name, draw }); }

        // An element with attributes and children; strings become text nodes, so markup in data is shown, not run.
        function el(tag, attributes, ...children) {
          const node = document.createElement(tag);
          for (const [name, value] of Object.entries(attributes || {})) {
            if (value === null || value === undefined || value === false) continue;
            if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
            else if (name === "class") node.className = value;
            else node.setAttribute(name, value === true ? "" : String(value));
          }
          for (const child of children.flat(Infinity)) {
            if (child === null || child === undefined || child === false) continue;
            node.append(child instanceof Node ? child : document.createTextNode(String(child)));
          }
          return node;
        }

        class APIError extends Error {
          constructor(status, code, message) { super(message); this.status = status; this.code = code; }
        }

        // One call to the JSON API with the signed-in token; a refused token signs out.
        async function api(method, path, body) {
          const headers = { "Authorization": "Bearer " + session.token };
          if (body !== undefined) headers["Content-Type"] = "application/json";
          const response = await fetch("/v1" + path, {
            method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
          });
          if (response.status === 401) {
            session.signOut("Your token was refused. Sign in again.");
            throw new APIError(401, "auth", "signed out");
          }
          const text = await response.text();
          if (!response.ok) {
            let code = "http." + response.status, message = text;
            try { const parsed = JSON.parse(text).error; code = parsed.code; message = parsed.message; } catch (_) {}
            throw new APIError(response.status, code, message);
          }
          const type = response.headers.get("Content-Type") || "";
          return type.includes("json") && text ? JSON.parse(text) : text;
        }

        let toastTimer = null;
        function toast(message, bad) {
          const node = document.getElementById("toast");
          node.textContent = message;
          node.className = bad ? "bad" : "";
          node.hidden = false;
          clearTimeout(toastTimer);
          toastTimer = setTimeout(() => { node.hidden = true; }, bad ? 7000 : 3500);
        }

        function badge(text) { return el("span", { class: "badge " + text }, text); }
        function link(path, text) { return el("a", { href: path, "data-nav": true }, text); }
        function instancePath(id) { return "/ui/instances/" + encodeURIComponent(id); }
        function ms(nanos) { return nanos === null || nanos === undefined ? "–" : (nanos / 1e6).toFixed(1) + " ms"; }
        function mib(value) { return value >= 1024 ? (value / 1024).toFixed(1) + " GiB" : value + " MiB"; }
        function bytes(value) {
          const units = ["B", "KiB", "MiB", "GiB"];
          let i = 0;
          while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
          return (i === 0 ? value : value.toFixed(1)) + " " + units[i];
        }
        function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }
        function bootNanos(instance) {
          const t = instance.timeline || {};
          return t.ready != null && t.accepted != null ? t.ready - t.accepted : null;
        }
        // A used/total bar; the fill's width is set through the CSS object model (no inline style attribute).
        function bar(label, used, total, format) {
          const share = total > 0 ? Math.min(1, used / total) : 0;
          const fill = el("span", { class: share >= 0.95 ? "full" : share >= 0.75 ? "high" : "" });
          fill.style.width = (share * 100).toFixed(1) + "%";
          return el("div", { class: "capacity" },
            el("div", { class: "bar-label" }, el("span", {}, label),
              el("span", { class: "muted" }, format(used) + " / " + format(total))),
            el("div", { class: "bar", role: "meter", "aria-valuenow": used, "aria-valuemax": total }, fill));
        }
        function table(headings, rows, emptyText) {
          if (rows.length === 0) return el("p", { class: "empty" }, emptyText);
          return el("table", {}, el("thead", {}, el("tr", {}, headings.map(h => el("th", {}, h)))), el("tbody", {}, rows));
        }
        function pageHead(title, subtitle, ...extra) {
          return el("div", { class: "page-head" },
            el("div", {}, el("h1", {}, title), subtitle ? el("p", { class: "muted" }, subtitle) : null), extra);
        }
        """#
}
