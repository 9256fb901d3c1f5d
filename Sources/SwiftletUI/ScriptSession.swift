/// Signing in and out: the token lives in the tab's sessionStorage, and is checked against `/v1`
/// before any page is drawn.
enum ScriptSession {
    static let source = #"""
        const session = {
          token: sessionStorage.getItem("swiftlet.token"),

          // Asks the API whether the token is good; a refused one never gets past the sign-in.
          async check(token) {
            const response = await fetch("/v1/instances?limit=1", {
              headers: { "Authorization": "Bearer " + token }, cache: "no-store",
            });
            return response.ok;
          },

          async signIn(token) {
            const error = document.getElementById("sign-in-error");
            error.hidden = true;
            let good = false;
            try { good = await this.check(token); } catch (_) { good = false; }
            if (!good) {
              error.textContent = "That token was refused.";
              error.hidden = false;
              return;
            }
            this.token = token;
            sessionStorage.setItem("swiftlet.token", token);
            document.getElementById("token").value = "";
            router.render();
          },

          signOut(message) {
            this.token = null;
            sessionStorage.removeItem("swiftlet.token");
            router.stop();
            this.showSignIn(message);
          },

          showSignIn(message) {
            document.getElementById("page").hidden = true;
            document.getElementById("page").replaceChildren();
            document.getElementById("nav").hidden = true;
            document.getElementById("sign-out").hidden = true;
            document.getElementById("sign-in").hidden = false;
            const error = document.getElementById("sign-in-error");
            error.textContent = message || "";
            error.hidden = !message;
          },

          showPage() {
            document.getElementById("sign-in").hidden = true;
            document.getElementById("nav").hidden = false;
            document.getElementById("sign-out").hidden = false;
            document.getElementById("page").hidden = false;
          },
        };
        """#
}
