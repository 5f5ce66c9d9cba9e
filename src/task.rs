//! Running blocking work from async code.

/// Runs `f` off the async threads, `join` naming a failure of the task itself.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    join: impl FnOnce(String) -> E,
) -> Result<T, E> {
    // On a single-threaded runtime (the local commands, see main.rs) this is
    // the only thing going on: handing it to another thread would only add
    // two context switches, which cost milliseconds on a loaded machine.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| join(e.to_string()))?
}
