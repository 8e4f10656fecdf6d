//! The click-through page of `make dev` (`tools/local-api/static/index.html`) in a real
//! browser: headless Chromium, driven through chromedriver's W3C WebDriver HTTP API, loads
//! the page from the same local-api binary `make dev` runs (on a free 127.0.0.1 port, over
//! the local AWS stack), types a phone and the SMS codes local-api prints, and clicks
//! send → verify (a wrong code, then the right one) → refresh → my sessions → logout →
//! refresh; signs in again, is asked to re-authenticate by "delete account" (a sign-in
//! older than `REAUTH_MAX_AGE_SECONDS`), logs out everywhere → refresh; signs in a third
//! time and deletes the account → my sessions (CONTRACT §7), checking what the page shows
//! after each click. Screenshots go to `target/browser/` (`click-through.png` is the last
//! step). If local-api serves the API docs page
//! (`/api/v1/auth/docs`), the browser loads it too and it must show the API's title from
//! its OpenAPI document; only a 404 there skips that part.
//!
//! Ignored in the plain `cargo test` run: it needs Chromium and chromedriver
//! (`local/setup-browser.sh` installs Debian's) and `target/debug/local-api`. Run as
//! `local/with-stack.sh cargo test -p foodsave-auth --test browser -- --ignored`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use foodsave_auth::devstack;
use serde_json::{Value, json};

/// How long any one thing the test waits for may take: a page update after a click, a
/// process getting ready, an SMS line.
const WAIT: Duration = Duration::from_secs(30);

/// The W3C WebDriver key of an element reference (WebDriver §12.1).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn target_dir() -> PathBuf {
    let root = devstack::workspace_root();
    let root = root.canonicalize().unwrap_or(root);
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Polls `probe` every 100 ms until it gives a value; panics after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process in its own process group, its stdout and stderr collected. Dropping it
/// (also when the test fails) stops the whole group: chromedriver takes its Chromium with
/// it. When the test is failing, what the process printed is shown.
struct Process {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    fn start(name: &'static str, command: &mut Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Self {
            name,
            child,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.name, self.output());
        }
    }

    /// The first line of the output that contains `needle`, waiting for it.
    fn line_with(&mut self, needle: &str) -> String {
        self.nth_line_with(needle, 1)
    }

    /// The `n`th line (from 1) of the output that contains `needle`, waiting for it.
    fn nth_line_with(&mut self, needle: &str, n: usize) -> String {
        wait_for(
            &format!("{}: line {n} with {needle:?}", self.name),
            WAIT,
            || {
                self.assert_running();
                self.output()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .nth(n.saturating_sub(1))
                    .map(str::to_owned)
            },
        )
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.output());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group("-TERM");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Chromium's helpers may outlive chromedriver's exit: the group goes in any case.
        self.signal_group("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct HttpResponse {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`); the body is read by
/// `Content-Length`, chunked, or to the end.
fn http(
    authority: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {status_line:?}")))?;
    let (mut length, mut chunked, mut content_type) = (None, false, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-type" => content_type = value.to_owned(),
                _ => {}
            }
        }
    }
    let mut raw = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        raw.resize(length, 0);
        reader.read_exact(&mut raw)?;
    } else {
        reader.read_to_end(&mut raw)?;
    }
    Ok(HttpResponse {
        status,
        content_type,
        body: String::from_utf8_lossy(&raw).into_owned(),
    })
}

/// A WebDriver session of chromedriver. Dropping it ends the session (Chromium quits).
struct Browser {
    driver: String,
    session: String,
}

impl Browser {
    fn start(driver: String, user_data_dir: &std::path::Path) -> Self {
        let mut options = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1000,1500",
                format!("--user-data-dir={}", user_data_dir.display()),
            ]
        });
        if let Some(chromium) = on_path("chromium") {
            options["binary"] = json!(chromium);
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options }
            }
        });
        let response = http(&driver, "POST", "/session", Some(&capabilities)).unwrap();
        let value: Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(response.status, 200, "new session: {value}");
        let session = value["value"]["sessionId"].as_str().unwrap().to_owned();
        Self { driver, session }
    }

    /// One WebDriver command on the session; its `value`.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let response = http(&self.driver, method, &path, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let value: Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {}", response.body));
        assert_eq!(
            response.status, 200,
            "WebDriver {method} {path}: {}",
            value["value"]
        );
        value["value"].clone()
    }

    fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    fn title(&self) -> String {
        self.command("GET", "/title", None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find(&self, css: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: no element reference in {found}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.command("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Clears the field, then types `text` into it as key presses.
    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.command("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn value_of(&self, css: &str) -> String {
        let id = self.find(css);
        self.command("GET", &format!("/element/{id}/property/value"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The element's rendered text, as a user sees it.
    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.command("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.command("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir = target_dir().join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(&self.driver, "DELETE", &path, None);
    }
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the page's "Last response" shows: `<status> <statusText>` on the first line, then
/// the JSON body.
fn shown(text: &str) -> (String, Value) {
    let (status, body) = text.split_once('\n').unwrap_or((text, ""));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status.to_owned(), body)
}

/// Clicks `button`, then waits for "Last response" to change from `before`.
fn click_and_read(browser: &Browser, button: &str, before: &str) -> (String, Value, String) {
    browser.click(button);
    let text = wait_for(
        &format!("#out to change after clicking {button}"),
        WAIT,
        || Some(browser.text("#out")).filter(|t| !t.is_empty() && t != before),
    );
    let (status, body) = shown(&text);
    (status, body, text)
}

/// The 6-digit code of an SMS line local-api printed.
fn code_of(sms: &str) -> String {
    sms.rsplit(": ")
        .next()
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {sms:?}"))
        .to_owned()
}

/// How old a sign-in may be for "delete account" in this run (`REAUTH_MAX_AGE_SECONDS`,
/// CONTRACT §7): short, so that the page's `REAUTH_REQUIRED` handling is reached in
/// seconds, not the default 5 minutes, and long enough for a click right after a sign-in.
const REAUTH_MAX_AGE_SECONDS: u64 = 3;

fn random_phone() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("+7700{:07}", (nanos ^ std::process::id()) % 10_000_000)
}

/// The OpenAPI document local-api serves (or `openapi.yaml` on disk): its `info.title` and
/// its paths.
fn api_document(api: &str) -> (String, Vec<String>) {
    let served = http(api, "GET", "/api/v1/auth/openapi.yaml", None)
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body);
    let text = served.unwrap_or_else(|| {
        std::fs::read_to_string(devstack::workspace_root().join("openapi.yaml")).expect(
            "/api/v1/auth/docs is served but neither /api/v1/auth/openapi.yaml nor openapi.yaml is",
        )
    });
    let document: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let title = document["info"]["title"]
        .as_str()
        .expect("the OpenAPI document has no info.title")
        .to_owned();
    let paths = document["paths"]
        .as_mapping()
        .expect("the OpenAPI document has no paths")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    (title, paths)
}

#[test]
#[ignore = "needs Chromium and chromedriver (local/setup-browser.sh), target/debug/local-api and the local AWS stack: run by make test"]
fn the_click_through_page_walks_login_sessions_logout_and_deletion_in_a_browser() {
    let started = Instant::now();
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL").is_some(),
        "AWS_ENDPOINT_URL is not set: run under local/with-stack.sh (make test does)"
    );
    let chromedriver = on_path("chromedriver")
        .expect("chromedriver is not on PATH: run local/setup-browser.sh (make test does)");
    let local_api = devstack::lambda_runtime::profile_binary("local-api", "debug").unwrap();

    // local-api as `make dev` runs it, on a free port, with a short re-authentication age.
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let base = format!("http://{api}/api/v1/auth");
    let mut local_api = Process::start(
        "local-api",
        Command::new(local_api)
            .current_dir(devstack::workspace_root())
            .env("PORT", api_port.to_string())
            .env("REAUTH_MAX_AGE_SECONDS", REAUTH_MAX_AGE_SECONDS.to_string()),
    );
    local_api.line_with(&format!("FoodSave Auth local API on {base}"));

    let driver_port = free_port();
    let driver = format!("127.0.0.1:{driver_port}");
    let mut chromedriver = Process::start(
        "chromedriver",
        Command::new(chromedriver).arg(format!("--port={driver_port}")),
    );
    wait_for("chromedriver /status ready", WAIT, || {
        chromedriver.assert_running();
        let status = http(&driver, "GET", "/status", None).ok()?;
        let status: Value = serde_json::from_str(&status.body).ok()?;
        status["value"]["ready"].as_bool().filter(|ready| *ready)
    });
    let profile = TempDir(std::env::temp_dir().join(format!(
        "foodsave-browser-{}-{driver_port}",
        std::process::id()
    )));
    std::fs::create_dir_all(&profile.0).unwrap();
    let browser = Browser::start(driver.clone(), &profile.0);
    let ready = started.elapsed();

    // The page, as a person opening http://127.0.0.1:<port>/ sees it.
    browser.navigate(&format!("http://{api}/"));
    assert_eq!(browser.title(), "FoodSave Auth — local walk-through");
    assert_eq!(browser.text("#out"), "—");
    assert_eq!(browser.value_of("#phone"), "+77001234567");

    // 1. Send: a phone of this run typed in, the 200 and its body shown.
    let phone = random_phone();
    browser.type_into("#phone", &phone);
    assert_eq!(browser.value_of("#phone"), phone);
    let (status, body, text) = click_and_read(&browser, "#send", "—");
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(
        body,
        json!({ "message": "OTP sent", "retryAfterSeconds": 300 })
    );
    browser.screenshot("1-send.png");

    // The SMS, as `make dev` prints it.
    let sms_line = format!("SMS to {phone}: ");
    let code = code_of(&local_api.line_with(&sms_line));

    // 2a. A wrong code: the error body, with the tries left.
    let wrong: String = code
        .chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                char::from(c as u8 + 1)
            }
        })
        .collect();
    browser.type_into("#code", &wrong);
    let (status, body, text) = click_and_read(&browser, "#verify", &text);
    assert_eq!(status, "400 Bad Request", "{text}");
    assert_eq!(body["code"], "INVALID_CODE", "{text}");
    assert_eq!(body["attemptsLeft"], 4, "{text}");
    assert_eq!(browser.text("#claims"), "—", "no token yet");

    // 2b. The code from the SMS: the token pair, and the access token's claims.
    browser.type_into("#code", &code);
    let (status, pair, text) = click_and_read(&browser, "#verify", &text);
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(pair["tokenType"], "Bearer", "{text}");
    assert_eq!(pair["expiresIn"], 3600, "{text}");
    let access = pair["accessToken"].as_str().unwrap().to_owned();
    let refresh = pair["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(access.split('.').count(), 3, "not a JWT: {access}");
    assert!(!refresh.is_empty());
    let claims: Value = serde_json::from_str(&browser.text("#claims")).unwrap();
    assert_eq!(claims["iss"], base.as_str(), "{claims}");
    assert!(
        claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap(),
        "{claims}"
    );
    assert_eq!(claims["auth_time"], claims["iat"], "{claims}");
    browser.screenshot("2-verify.png");

    // 3. Refresh: a new pair, the refresh token rotated.
    let (status, rotated, text) = click_and_read(&browser, "#refresh", &text);
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(rotated["tokenType"], "Bearer", "{text}");
    let next = rotated["refreshToken"].as_str().unwrap();
    assert_ne!(next, refresh, "the refresh token was not rotated");
    assert_ne!(rotated["accessToken"].as_str().unwrap(), access);
    let claims_after: Value = serde_json::from_str(&browser.text("#claims")).unwrap();
    assert_eq!(claims_after["sub"], claims["sub"], "{claims_after}");
    browser.screenshot("3-refresh.png");

    // 4. My sessions, with the access token just refreshed: this one session, current.
    let (status, body, text) = click_and_read(&browser, "#sessions", &text);
    assert_eq!(status, "200 OK", "{text}");
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{text}");
    assert_eq!(sessions[0]["id"], claims["sid"], "{text}");
    assert_eq!(sessions[0]["current"], true, "{text}");
    assert!(
        sessions[0]["userAgent"]
            .as_str()
            .is_some_and(|agent| agent.starts_with("Mozilla/5.0")),
        "the browser's User-Agent: {text}"
    );
    let table = browser.text("#session-list");
    assert!(table.contains("this device"), "{table}");
    assert_eq!(
        table.lines().count(),
        2,
        "a header and one session: {table}"
    );
    browser.screenshot("4-sessions.png");

    // 5. Log out with the live token: 200 and {}.
    let (status, body, text) = click_and_read(&browser, "#logout", &text);
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(body, json!({}), "{text}");
    assert_eq!(
        browser.text("#session-list"),
        "",
        "the list shows only the latest answer of My sessions"
    );
    browser.screenshot("5-logout.png");

    // 6. Refresh after logout: the page still holds that token, which is dead now.
    let (status, body, text) = click_and_read(&browser, "#refresh", &text);
    assert_eq!(status, "401 Unauthorized", "{text}");
    assert_eq!(body["code"], "INVALID_REFRESH_TOKEN", "{text}");
    assert!(browser.text("#note").contains("sign in again"));

    // 7. Sign in again (the second SMS of this phone).
    let (status, _, text) = click_and_read(&browser, "#send", &text);
    assert_eq!(status, "200 OK", "{text}");
    browser.type_into("#code", &code_of(&local_api.nth_line_with(&sms_line, 2)));
    let (status, second, text) = click_and_read(&browser, "#verify", &text);
    assert_eq!(status, "200 OK", "{text}");
    let second_claims: Value = serde_json::from_str(&browser.text("#claims")).unwrap();
    assert_eq!(second_claims["sub"], claims["sub"], "the same account");

    // 8. Delete the account once that sign-in is older than REAUTH_MAX_AGE_SECONDS: the
    // page says to sign in again first (RFC 9470 challenge, CONTRACT §7).
    let signed_in = second_claims["auth_time"].as_u64().unwrap();
    wait_for("the sign-in to age", WAIT, || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now > signed_in + REAUTH_MAX_AGE_SECONDS + 1).then_some(())
    });
    let (status, body, text) = click_and_read(&browser, "#delete", &text);
    assert_eq!(status, "401 Unauthorized", "{text}");
    assert_eq!(body["code"], "REAUTH_REQUIRED", "{text}");
    let note = browser.text("#note");
    assert!(
        note.contains(&format!(
            "needs a sign-in of the last {REAUTH_MAX_AGE_SECONDS} seconds"
        )) && note.contains("send a new code"),
        "{note}"
    );
    browser.screenshot("8-reauth-required.png");

    // 9. Log out everywhere (scope all), then refresh: the session is gone.
    let (status, body, text) = click_and_read(&browser, "#logout-all", &text);
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(body, json!({}), "{text}");
    let (status, body, text) = click_and_read(&browser, "#refresh", &text);
    assert_eq!(status, "401 Unauthorized", "{text}");
    assert_eq!(body["code"], "INVALID_REFRESH_TOKEN", "{text}");
    assert_ne!(
        second["refreshToken"], pair["refreshToken"],
        "a new session's token"
    );
    browser.screenshot("9-logout-everywhere.png");

    // 10. Sign in a third time and delete the account at once: 200 and {}.
    let (status, _, text) = click_and_read(&browser, "#send", &text);
    assert_eq!(status, "200 OK", "{text}");
    browser.type_into("#code", &code_of(&local_api.nth_line_with(&sms_line, 3)));
    let (status, _, text) = click_and_read(&browser, "#verify", &text);
    assert_eq!(status, "200 OK", "{text}");
    let (status, body, text) = click_and_read(&browser, "#delete", &text);
    assert_eq!(status, "200 OK", "{text}");
    assert_eq!(body, json!({}), "{text}");
    browser.screenshot("10-delete.png");

    // 11. My sessions with that token: the account is gone, so is the token.
    let (status, body, text) = click_and_read(&browser, "#sessions", &text);
    assert_eq!(status, "401 Unauthorized", "{text}");
    assert_eq!(body["code"], "INVALID_ACCESS_TOKEN", "{text}");
    assert!(browser.text("#note").contains("refresh, then retry once"));
    let shot = browser.screenshot("click-through.png");
    eprintln!("screenshot: {}", shot.display());

    // The API docs page, where local-api serves one.
    let docs = http(&api, "GET", "/api/v1/auth/docs", None).unwrap();
    if docs.status == 404 {
        eprintln!("/api/v1/auth/docs: 404, the docs page is not served here; skipped");
    } else {
        assert_eq!(docs.status, 200, "/api/v1/auth/docs: {}", docs.body);
        assert!(
            docs.content_type.starts_with("text/html"),
            "/api/v1/auth/docs: content-type {:?}",
            docs.content_type
        );
        let (title, paths) = api_document(&api);
        browser.navigate(&format!("{base}/docs"));
        // Rendered by script from the document, so waited for; Swagger UI writes a zero-width
        // space before each `/` of a path.
        let rendered = wait_for(&format!("the docs page to show {title:?}"), WAIT, || {
            let text = browser.text("body").replace('\u{200b}', "");
            text.contains(&title).then_some(text)
        });
        for path in &paths {
            assert!(
                rendered.contains(path.as_str()),
                "the docs page does not show {path}:\n{rendered}"
            );
        }
        let shot = browser.screenshot("docs.png");
        eprintln!(
            "docs page shows {title:?} and {} paths; screenshot: {}",
            paths.len(),
            shot.display()
        );
    }
    eprintln!(
        "browser check: ready in {:.1} s, done in {:.1} s",
        ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
