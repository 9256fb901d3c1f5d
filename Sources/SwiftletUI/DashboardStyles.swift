/// The dashboard's stylesheet: a light, quiet layout readable on a laptop screen.
enum DashboardStyles {
    static let css = """
        :root {
          --bg: #f5f7fa; --card: #fff; --ink: #1d2633; --muted: #677386; --line: #e2e7ee;
          --accent: #2f6fed; --accent-ink: #fff; --ok: #1f9d55; --warn: #d98a00; --bad: #d64545; --idle: #8a94a6;
          font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
          font-size: 14px; color: var(--ink); background: var(--bg);
        }
        * { box-sizing: border-box; }
        body { margin: 0; }
        a { color: var(--accent); text-decoration: none; }
        a:hover { text-decoration: underline; }
        code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
        [hidden] { display: none !important; }
        header.top {
          display: flex; align-items: center; gap: 28px; padding: 0 28px; height: 54px;
          background: #15202e; color: #fff; position: sticky; top: 0; z-index: 2;
        }
        header.top .brand { color: #fff; font-weight: 700; font-size: 17px; letter-spacing: .3px; }
        header.top nav { display: flex; gap: 4px; flex: 1; }
        header.top nav a { color: #c5cfdd; padding: 7px 12px; border-radius: 6px; }
        header.top nav a:hover { background: #233246; text-decoration: none; }
        header.top nav a.active { color: #fff; background: #2a3d55; }
        main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 60px; }
        h1 { font-size: 22px; margin: 0 0 4px; }
        h2 { font-size: 15px; margin: 0 0 12px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); }
        .page-head { display: flex; align-items: flex-end; justify-content: space-between; gap: 16px; margin-bottom: 18px; }
        .muted { color: var(--muted); }
        .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; margin-bottom: 18px; }
        .grid { display: grid; gap: 18px; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); }
        .sign-in { max-width: 440px; margin: 60px auto; }
        .sign-in h1 { margin-bottom: 8px; }
        label { display: block; font-weight: 600; margin: 12px 0 6px; }
        input, select {
          font: inherit; padding: 8px 10px; border: 1px solid #cbd3de; border-radius: 6px; background: #fff; min-width: 0;
        }
        .sign-in input { width: 100%; }
        button {
          font: inherit; padding: 7px 14px; border-radius: 6px; border: 1px solid #cbd3de; background: #fff;
          color: var(--ink); cursor: pointer;
        }
        button:hover { border-color: #9aa7b8; }
        button:disabled { opacity: .5; cursor: default; }
        button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-ink); margin-top: 14px; }
        button.danger { color: var(--bad); }
        button.quiet { background: transparent; color: #c5cfdd; border-color: #34465e; }
        button.small { padding: 3px 9px; font-size: 12.5px; }
        .error { color: var(--bad); margin: 10px 0 0; }
        .toolbar { display: flex; flex-wrap: wrap; gap: 10px; align-items: end; }
        .toolbar input[type=search] { width: 320px; }
        td .capacity { min-width: 120px; }
        .toolbar .field label { margin-top: 0; font-size: 12px; color: var(--muted); }
        .toolbar button.primary { margin-top: 0; }
        table { width: 100%; border-collapse: collapse; }
        th { text-align: left; font-size: 12px; text-transform: uppercase; letter-spacing: .4px; color: var(--muted); font-weight: 600; }
        th, td { padding: 8px 10px; border-bottom: 1px solid var(--line); vertical-align: middle; }
        tr:last-child td { border-bottom: none; }
        td.actions { white-space: nowrap; text-align: right; }
        td.actions button { margin-left: 4px; }
        .badge {
          display: inline-block; padding: 2px 9px; border-radius: 999px; font-size: 12px; font-weight: 600;
          background: #eef1f5; color: var(--idle);
        }
        .badge.RUNNING, .badge.UP { background: #e3f5ea; color: var(--ok); }
        .badge.BUILDING, .badge.PAUSED, .badge.cordoned { background: #fff3dc; color: var(--warn); }
        .badge.ERROR, .badge.DOWN, .badge.UNKNOWN { background: #fde7e7; color: var(--bad); }
        .stat { font-size: 28px; font-weight: 700; }
        .stats { display: flex; flex-wrap: wrap; gap: 12px; }
        .stats .stat-box { flex: 1; min-width: 110px; padding: 12px 14px; border: 1px solid var(--line); border-radius: 8px; }
        .bar-label { display: flex; justify-content: space-between; font-size: 12.5px; margin: 10px 0 4px; }
        .bar { height: 9px; background: #eef1f5; border-radius: 5px; overflow: hidden; }
        .bar > span { display: block; height: 100%; background: var(--accent); border-radius: 5px; }
        .bar > span.high { background: var(--warn); }
        .bar > span.full { background: var(--bad); }
        .host-head { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
        .host-head strong { font-size: 15px; }
        dl.facts { display: grid; grid-template-columns: 150px 1fr; gap: 6px 14px; margin: 0; }
        dl.facts dt { color: var(--muted); }
        dl.facts dd { margin: 0; word-break: break-all; }
        .waterfall { display: grid; grid-template-columns: 130px 1fr 90px; gap: 6px 12px; align-items: center; }
        .waterfall .track { position: relative; height: 16px; background: #f0f3f7; border-radius: 4px; }
        .waterfall .segment { position: absolute; top: 0; bottom: 0; min-width: 2px; background: var(--accent); border-radius: 4px; }
        .waterfall .segment.ready { background: var(--ok); }
        .waterfall .ms { text-align: right; font-variant-numeric: tabular-nums; }
        pre.console {
          background: #0f1722; color: #d7e0ea; padding: 14px; border-radius: 8px; max-height: 380px; overflow: auto;
          margin: 0; white-space: pre-wrap; word-break: break-all; min-height: 120px;
        }
        .split { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 18px; }
        @media (max-width: 980px) { .split { grid-template-columns: 1fr; } }
        #toast {
          position: fixed; right: 22px; bottom: 22px; background: #15202e; color: #fff; padding: 10px 16px;
          border-radius: 8px; box-shadow: 0 4px 18px rgba(0,0,0,.18); max-width: 460px;
        }
        #toast.bad { background: var(--bad); }
        .empty { color: var(--muted); padding: 14px 0; }

        """
}
