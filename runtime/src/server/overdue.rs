//! Runs that outlive their request: counted when they stop at the next kernel boundary, and
//! reported stuck (log and `/metrics`) while one kernel keeps them past `server.stuck_after_ms`.

use super::state::{AppState, OutputTensor};
use opal_runtime::{RunControl, RunError, SessionError};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

type RunTask = JoinHandle<Result<Vec<OutputTensor>, SessionError>>;

/// Follows `run`, of model `model`, whose request timed out and whose `control` is cancelled.
pub(crate) fn follow(state: Arc<AppState>, model: String, mut run: RunTask, control: RunControl) {
    tokio::spawn(async move {
        let grace = Duration::from_millis(state.settings.stuck_after_ms);
        if let Ok(result) = tokio::time::timeout(grace, &mut run).await {
            record_end(&state, &model, result);
            return;
        }
        let node = control
            .current_step()
            .unwrap_or_else(|| "between kernels".to_owned());
        tracing::error!(
            model = %model,
            node = %node,
            after_ms = state.settings.stuck_after_ms,
            "a run is stuck: its request timed out, and it has not come back from {node}; it keeps one of model '{model}''s max_concurrent slots until it does"
        );
        state.metrics.record_stuck(&model, true);
        let result = run.await;
        state.metrics.record_stuck(&model, false);
        tracing::warn!(model = %model, node = %node, "the stuck run came back; its slot is free again");
        record_end(&state, &model, result);
    });
}

fn record_end(
    state: &AppState,
    model: &str,
    result: Result<Result<Vec<OutputTensor>, SessionError>, tokio::task::JoinError>,
) {
    if let Ok(Err(SessionError::Run(RunError::Cancelled {
        completed, total, ..
    }))) = result
    {
        state.metrics.record_cancelled(model);
        tracing::info!(
            model,
            completed,
            total,
            "a timed-out run stopped at a kernel boundary"
        );
    }
}
