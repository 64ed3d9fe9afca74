//! A hello-world spin-sdk 6.0 component: the floor of the load benchmark
//! (`tests/host/examples/load.rs`), which reports every route's throughput also as a ratio to
//! this component's, measured in the same run (docs/PERFORMANCE.md). Reads nothing, answers a
//! constant text: what remains is the runtime's own per-request cost. `GET /log` also prints
//! one log line, as every app component does per request: the cost of that line alone.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    if req.uri().path() == "/log" {
        println!("[hello] GET /log 200 ok");
    }
    "Hello, World!"
}
