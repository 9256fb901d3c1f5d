/// Which page a `/ui` path shows, the refresh timers of the page on screen, and the start: links
/// move through history without reloading, and nothing is drawn before the token is accepted.
enum ScriptRouter {
    static let source = #"""
        const router = {
          timers: [],
          generation: 0,

          // Ends the page on screen: its refreshes stop, and answers still on their way are dropped.
          stop() {
            this.timers.forEach(clearInterval);
            this.timers = [];
            this.generation++;
          },

          // Runs `refresh` now and every `interval` ms while the page it belongs to is on screen.
          every(interval, refresh) {
            const generation = this.generation;
            const run = async () => {
              if (generation !== this.generation) return;
              try { await refresh(); } catch (error) {
                if (error.status !== 401 && generation === this.generation) toast(error.message, true);
              }
            };
            this.timers.push(setInterval(run, interval));
            return run();
          },

          current() { return this.generation; },

          async render() {
            this.stop();
            if (!session.token) { session.showSignIn(); return; }
            const path = location.pathname.replace(/\/+$/, "") || "/ui";
            const match = pages.map(page => [page, path.match(page.pattern)]).find(([, found]) => found);
            session.showPage();
            const root = document.getElementById("page");
            root.replaceChildren();
            for (const a of document.querySelectorAll("#nav a")) {
              a.classList.toggle("active", Boolean(match) && a.dataset.page === match[0].name);
            }
            if (!match) { root.append(el("div", { class: "card" }, "There is no page at " + path + ".")); return; }
            const generation = this.generation;
            try {
              await match[0].draw(root, ...match[1].slice(1).map(decodeURIComponent));
            } catch (error) {
              if (error.status !== 401 && generation === this.generation) root.append(el("p", { class: "error" }, error.message));
            }
          },

          go(path) {
            history.pushState(null, "", path);
            this.render();
          },
        };

        async function start() {
          document.addEventListener("click", event => {
            const a = event.target.closest("a[data-nav]");
            if (!a || event.metaKey || event.ctrlKey || event.shiftKey) return;
            event.preventDefault();
            router.go(a.getAttribute("href"));
          });
          window.addEventListener("popstate", () => router.render());
          document.getElementById("sign-in-form").addEventListener("submit", event => {
            event.preventDefault();
            session.signIn(document.getElementById("token").value.trim());
          });
          document.getElementById("sign-out").addEventListener("click", () => session.signOut("Signed out."));
          if (session.token && !(await session.check(session.token).catch(() => false))) {
            session.signOut("Your token was refused. Sign in again.");
            return;
          }
          router.render();
        }

        document.addEventListener("DOMContentLoaded", start);
        """#
}
