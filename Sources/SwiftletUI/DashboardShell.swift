/// The one HTML page every `/ui` path answers with. It holds no data and no inline script: the
/// sign-in form shows until `dashboard.js` has a token that `/v1` accepts.
enum DashboardShell {
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Swiftlet</title>
        <link rel="icon" href="\(DashboardAssets.iconPath)" type="image/svg+xml">
        <link rel="stylesheet" href="\(DashboardAssets.stylesheetPath)">
        <script src="\(DashboardAssets.scriptPath)" defer></script>
        </head>
        <body>
        <header class="top">
          <a class="brand" href="/ui" data-nav>Swiftlet</a>
          <nav id="nav" hidden>
            <a href="/ui" data-nav data-page="overview">Overview</a>
            <a href="/ui/instances" data-nav data-page="instances">Instances</a>
            <a href="/ui/images" data-nav data-page="images">Images</a>
            <a href="/ui/networks" data-nav data-page="networks">Networks</a>
            <a href="/ui/hosts" data-nav data-page="hosts">Hosts</a>
          </nav>
          <button id="sign-out" class="quiet" hidden>Sign out</button>
        </header>
        <main id="main">
          <section id="sign-in" class="card sign-in">
            <h1>Sign in to Swiftlet</h1>
            <p class="muted">Paste an API token: the admin token (<code>admin.token</code> in the server's data
            directory) or a project's token (<code>swiftlet project token</code>).</p>
            <form id="sign-in-form" autocomplete="off">
              <label for="token">API token</label>
              <input id="token" name="token" type="password" spellcheck="false" autocomplete="off" required>
              <p id="sign-in-error" class="error" role="alert" hidden></p>
              <button type="submit" class="primary">Sign in</button>
            </form>
          </section>
          <div id="page" hidden></div>
        </main>
        <div id="toast" role="status" hidden></div>
        </body>
        </html>

        """
}
