//! `/api/v1/auth/docs`: `openapi.yaml` in Swagger UI, offline. The page is built in; the
//! Swagger UI files are read at request time from the pinned `swagger-ui-py` package in
//! `.venv` (`local/requirements.txt`, installed by `local/setup-venv.sh`, which `make dev`
//! runs), or from `SWAGGER_UI_DIR`. Without them only this route fails, with a text saying
//! how to get them; the API is untouched.

use std::path::{Path, PathBuf};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::HeaderValue;

/// The only files served from the Swagger UI directory, with their media types.
const ASSETS: [(&str, &str); 4] = [
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    ("swagger-ui.css", "text/css; charset=utf-8"),
    ("favicon-32x32.png", "image/png"),
    ("favicon-16x16.png", "image/png"),
];

const MISSING: &str = "Swagger UI is not installed, so /api/v1/auth/docs cannot be shown \
(the API and /api/v1/auth/openapi.yaml work without it).\n\
Install it, pinned, into .venv: local/setup-venv.sh (`make dev` runs it; the package is \
swagger-ui-py in local/requirements.txt),\n\
or point SWAGGER_UI_DIR at a directory holding Swagger UI's swagger-ui-bundle.js and \
swagger-ui.css.\n";

pub fn page() -> hyper::Response<Full<Bytes>> {
    match dist_dir() {
        Some(_) => respond(
            200,
            "text/html; charset=utf-8",
            Bytes::from_static(include_bytes!("../static/docs.html")),
        ),
        None => missing(),
    }
}

pub fn asset(name: &str) -> hyper::Response<Full<Bytes>> {
    let Some((file, content_type)) = ASSETS.iter().find(|(file, _)| *file == name) else {
        return respond(
            404,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"no such file\n"),
        );
    };
    let Some(dir) = dist_dir() else {
        return missing();
    };
    match std::fs::read(dir.join(file)) {
        Ok(bytes) => respond(200, content_type, Bytes::from(bytes)),
        Err(_) => missing(),
    }
}

/// `SWAGGER_UI_DIR`, else `swagger_ui/static` in `.venv` of the working directory or of
/// this checkout.
fn dist_dir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("swagger-ui-bundle.js").is_file();
    if let Some(dir) = std::env::var_os("SWAGGER_UI_DIR") {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let roots = [PathBuf::from("."), checkout];
    roots.iter().find_map(|root| {
        std::fs::read_dir(root.join(".venv/lib"))
            .ok()?
            .flatten()
            .map(|python| python.path().join("site-packages/swagger_ui/static"))
            .find(|dir| usable(dir))
    })
}

/// A 404: the page is not served here, which is what a caller can act on.
fn missing() -> hyper::Response<Full<Bytes>> {
    respond(
        404,
        "text/plain; charset=utf-8",
        Bytes::from_static(MISSING.as_bytes()),
    )
}

/// A response of `status` with `body` as `content_type`, for the routes local-api
/// answers itself.
pub fn respond(
    status: u16,
    content_type: &'static str,
    body: Bytes,
) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}
