/// The dashboard's script, in parts each owning one thing, joined in this order. Every piece of
/// text from the API reaches the page through `el` (text nodes and attributes), never as markup.
enum DashboardScript {
    static let parts = [
        ScriptCore.source, ScriptSession.source, ScriptOverview.source, ScriptInstances.source,
        ScriptInstance.source, ScriptResources.source, ScriptRouter.source,
    ]
}
