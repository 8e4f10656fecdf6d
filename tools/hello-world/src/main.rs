//! The baseline of `make bench` (BENCHMARKS.md): the smallest `lambda_http` function,
//! answering `{}` to every API Gateway request. Built in the same `cargo build --release`
//! run as the functions, on the same runtime (`#[tokio::main]`, multi-threaded), so their
//! init and per-request cost can be read against what Lambda and `lambda_http` cost alone.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_req: Request| async {
        Ok::<_, Error>(
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from("{}"))?,
        )
    }))
    .await
}
