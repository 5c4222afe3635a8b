//! Helpers for the bdev modules' unit tests.

/// Runs `f` to completion on a current-thread runtime (with its I/O and
/// timer drivers, for io_uring's eventfd) inside a `LocalSet`, as I/O
/// runs on a reactor.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}
