//! `foodsave-auth-admin`: the operator's command line (CONTRACT §7, "Operator command
//! line"). Every action is `foodsave_auth::admin`, the functions' own storage rules, run
//! against the table of a deployed stack from an operator's laptop with the standard
//! AWS configuration (profiles, SSO, `AWS_REGION`, `AWS_ENDPOINT_URL`).
//!
//! stdout carries results only (JSON); stderr the one-line error and one audit line per
//! action, naming the operator (`--actor`, else the AWS caller identity). Exit status 0
//! on success (`block`, `unblock` and `unlock` also when nothing changed), 1 when
//! `sessions`, `revoke` or `delete-account` find no account (or `revoke --session` no such
//! live session), 2 on a usage error, 3 when AWS fails.

use std::process::ExitCode;
use std::sync::Arc;

use foodsave_auth::adapters::DynamoDbStore;
use foodsave_auth::admin::{Admin, AdminError};
use foodsave_auth::audit::{Audit, AuditEvent};
use foodsave_auth::clock::SystemClock;
use foodsave_auth::domain::PhoneNumber;
use foodsave_auth::ports::Clock;
use serde_json::json;

const NAME: &str = "foodsave-auth-admin";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `function` member of the audit lines it writes.
const AUDIT_FUNCTION: &str = "admin";

const USAGE: &str = "\
usage: foodsave-auth-admin [--stack NAME] [--actor NAME] COMMAND PHONE [OPTIONS]

Act on one phone's account in a deployed FoodSave Auth stack.

commands:
  sessions PHONE                  the account's live sessions, one JSON object a line
  revoke PHONE [--session ID]     revoke every live session (or one); prints {\"revoked\":N}
  delete-account PHONE            erase the account as /account/delete does
  unlock PHONE                    clear the phone's wrong-code count and send window
  block PHONE [--reason TEXT]     refuse the phone's sends and verifies; revokes its sessions
  unblock PHONE                   lift a block

PHONE is +7 followed by 10 digits. `foodsave-auth-admin COMMAND --help` explains one.

options:
  --stack NAME   find the table and the event bus in the outputs of CloudFormation
                 stack NAME (default: the TABLE_NAME and EVENT_BUS_NAME environment
                 variables; without a bus, no events are put)
  --actor NAME   who is acting, for the audit line (default: the AWS caller identity)
  --help         this text
  --version      the version

AWS configuration is the SDK's standard one: AWS_PROFILE, AWS_REGION, SSO, ...

exit status: 0 done, 1 no such account or session, 2 usage error, 3 AWS failed
";

const HELP_SESSIONS: &str = "\
usage: foodsave-auth-admin sessions PHONE

Print the live sessions of the phone's account, most recently used first, one JSON
object a line: {\"id\",\"createdAt\",\"lastUsedAt\",\"userAgent\"} (epoch seconds).
Exit status 1 when the phone has no account.
";

const HELP_REVOKE: &str = "\
usage: foodsave-auth-admin revoke PHONE [--session ID]

Revoke every live session of the phone's account, or only session ID; print
{\"revoked\":N}. Its refresh tokens stop working at once. Exit status 1 when the phone
has no account, or ID is not one of its live sessions.
";

const HELP_DELETE: &str = "\
usage: foodsave-auth-admin delete-account PHONE

Erase the phone's account as POST /account/delete does, without re-authentication:
every session ends, the account and its active code are removed (the next verify
creates a new user id); the send window, wrong-code count and any block stay.
Prints {\"deleted\":true,\"sessions\":N}. Exit status 1 when the phone has no account.
";

const HELP_UNLOCK: &str = "\
usage: foodsave-auth-admin unlock PHONE

Clear the phone's wrong-code count (the daily guess lock) and its send window, so it
can ask for and enter a code at once. A block stays. Prints {\"unlocked\":true|false}
(false: nothing to clear); exit status 0 either way.
";

const HELP_BLOCK: &str = "\
usage: foodsave-auth-admin block PHONE [--reason TEXT]

Block the phone, with or without an account: its sends and verifies answer 403
PHONE_BLOCKED before anything is spent, until `unblock`. Its account's live sessions are
revoked. A block survives an account deletion. Prints {\"blocked\":true,\"revoked\":N}.
";

const HELP_UNBLOCK: &str = "\
usage: foodsave-auth-admin unblock PHONE

Lift a block. Prints {\"unblocked\":true|false} (false: it was not blocked); exit
status 0 either way.
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Sessions,
    Revoke { session: Option<String> },
    DeleteAccount,
    Unlock,
    Block { reason: Option<String> },
    Unblock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    stack: Option<String>,
    actor: Option<String>,
    command: Command,
    phone: PhoneNumber,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Run(Invocation),
    Print(&'static str),
}

/// Why a run failed, as its exit status says.
enum Failure {
    NotFound(String),
    Usage(String),
    Aws(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (message, status) = match self {
            Self::NotFound(m) => (m, 1),
            Self::Usage(m) => (m, 2),
            Self::Aws(m) => (m, 3),
        };
        eprintln!("{NAME}: {message}");
        ExitCode::from(status)
    }
}

impl From<AdminError> for Failure {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::NotFound(what) => Self::NotFound(what.to_owned()),
            AdminError::Failed(err) => Self::Aws(foodsave_auth::telemetry::chain(&err).to_string()),
        }
    }
}

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut stack = None;
    let mut actor = None;
    let mut rest = args.iter();
    let command = loop {
        match rest.next().map(String::as_str) {
            None => return Err("no command given".into()),
            Some("--help" | "-h" | "help") => return Ok(Parsed::Print(USAGE)),
            Some("--version" | "-V") => return Ok(Parsed::Print("")),
            Some("--stack") => stack = Some(value_of(&mut rest, "--stack")?),
            Some("--actor") => actor = Some(value_of(&mut rest, "--actor")?),
            Some(flag) if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            Some(command) => break command,
        }
    };
    let help = match command {
        "sessions" => HELP_SESSIONS,
        "revoke" => HELP_REVOKE,
        "delete-account" => HELP_DELETE,
        "unlock" => HELP_UNLOCK,
        "block" => HELP_BLOCK,
        "unblock" => HELP_UNBLOCK,
        other => return Err(format!("unknown command {other:?}")),
    };
    let mut phone = None;
    let mut session = None;
    let mut reason = None;
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Parsed::Print(help)),
            "--session" if command == "revoke" => {
                session = Some(value_of(&mut rest, "--session")?);
            }
            "--reason" if command == "block" => reason = Some(value_of(&mut rest, "--reason")?),
            "--stack" => stack = Some(value_of(&mut rest, "--stack")?),
            "--actor" => actor = Some(value_of(&mut rest, "--actor")?),
            flag if flag.starts_with("--") => {
                return Err(format!("{command}: unknown option {flag}"));
            }
            value if phone.is_none() => phone = Some(value.to_owned()),
            value => return Err(format!("{command}: unexpected argument {value:?}")),
        }
    }
    let phone = phone.ok_or_else(|| format!("{command}: PHONE is required"))?;
    let phone = PhoneNumber::parse(&phone)
        .map_err(|_| format!("{command}: PHONE must be +7 followed by 10 digits"))?;
    let command = match command {
        "sessions" => Command::Sessions,
        "revoke" => Command::Revoke { session },
        "delete-account" => Command::DeleteAccount,
        "unlock" => Command::Unlock,
        "block" => Command::Block { reason },
        _ => Command::Unblock,
    };
    Ok(Parsed::Run(Invocation {
        stack,
        actor,
        command,
        phone,
    }))
}

fn value_of<'a>(rest: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<String, String> {
    match rest.next() {
        Some(value) if !value.is_empty() && !value.starts_with("--") => Ok(value.clone()),
        _ => Err(format!("{flag} needs a value")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match parse(&args) {
        Ok(Parsed::Run(invocation)) => invocation,
        Ok(Parsed::Print("")) => {
            println!("{NAME} {VERSION}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            return Failure::Usage(format!("{message} (see {NAME} --help)")).exit();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return Failure::Aws(format!("cannot start: {err}")).exit(),
    };
    match runtime.block_on(run(invocation)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}

/// The SDK's standard configuration (profiles, SSO, the environment), with the
/// functions' HTTPS client and timeouts.
async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(foodsave_auth::adapters::sdk_timeouts())
        .http_client(foodsave_auth::adapters::https_client())
        .load()
        .await
}

/// Where the functions' state lives: the table, and the event bus (`None`: no events).
struct Stack {
    table: String,
    event_bus: Option<String>,
}

/// The `TableName` and `EventBusName` outputs of `--stack`, else `TABLE_NAME` and
/// `EVENT_BUS_NAME` (the bus also when the stack has no such output).
async fn stack(aws: &aws_config::SdkConfig, stack: Option<&str>) -> Result<Stack, Failure> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let Some(stack) = stack else {
        return Ok(Stack {
            table: env("TABLE_NAME")
                .ok_or_else(|| Failure::Usage("set TABLE_NAME or pass --stack NAME".into()))?,
            event_bus: env("EVENT_BUS_NAME"),
        });
    };
    let described = aws_sdk_cloudformation::Client::new(aws)
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|err| {
            Failure::Aws(format!(
                "cannot describe stack {stack}: {}",
                aws_sdk_cloudformation::error::DisplayErrorContext(&err)
            ))
        })?;
    let output = |key: &str| {
        described
            .stacks()
            .iter()
            .flat_map(|s| s.outputs())
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .map(str::to_owned)
    };
    Ok(Stack {
        table: output("TableName")
            .ok_or_else(|| Failure::Aws(format!("stack {stack} has no TableName output")))?,
        event_bus: output("EventBusName").or_else(|| env("EVENT_BUS_NAME")),
    })
}

/// Who is acting: `--actor`, else the ARN of the AWS caller identity.
async fn actor(aws: &aws_config::SdkConfig, given: Option<String>) -> Result<String, Failure> {
    if let Some(actor) = given {
        return Ok(actor);
    }
    let identity = aws_sdk_sts::Client::new(aws)
        .get_caller_identity()
        .send()
        .await
        .map_err(|err| {
            Failure::Aws(format!(
                "cannot tell who you are (pass --actor): {}",
                aws_sdk_sts::error::DisplayErrorContext(&err)
            ))
        })?;
    identity
        .arn()
        .map(str::to_owned)
        .ok_or_else(|| Failure::Aws("the caller identity has no ARN (pass --actor)".into()))
}

/// `OTP_SEND_WINDOW_SECONDS`, as the functions read it (CONTRACT §5; 300 by default).
fn send_window_secs() -> u64 {
    std::env::var("OTP_SEND_WINDOW_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(300)
}

async fn run(invocation: Invocation) -> Result<(), Failure> {
    let aws = sdk_config().await;
    let Stack { table, event_bus } = stack(&aws, invocation.stack.as_deref()).await?;
    let actor = actor(&aws, invocation.actor).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Its events are the functions' (CONTRACT §7): put on the stack's bus (none without one:
    // docs/operations.md says to give it for a deployed stack).
    let bus_env = |name: &str| {
        (name == "EVENT_BUS_NAME")
            .then(|| event_bus.clone())
            .flatten()
    };
    let events = foodsave_auth::events::Events::from_env(&aws, &bus_env)
        .map_err(|err| Failure::Usage(err.to_string()))?;
    let admin = Admin::new(
        DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        Arc::clone(&clock),
        send_window_secs(),
    )
    .with_events(events);
    let phone = &invocation.phone;
    let audit = |event| Audit::new(event, AUDIT_FUNCTION).phone(phone).actor(&actor);
    match invocation.command {
        Command::Sessions => {
            for session in admin.sessions(phone).await? {
                println!(
                    "{}",
                    json!({
                        "id": session.id.as_str(),
                        "createdAt": session.created_at.as_secs(),
                        "lastUsedAt": session.last_used_at().as_secs(),
                        "userAgent": session.user_agent,
                    })
                );
            }
        }
        Command::Revoke { session } => {
            let (sub, revoked) = admin.revoke(phone, session.as_deref()).await?;
            let mut line = audit(AuditEvent::SessionRevoked)
                .user(&sub)
                .reason("admin")
                .count("sessions", revoked.len() as u64);
            if let Some(sid) = &session {
                line = line.session(sid);
            }
            line.emit_to_stderr(clock.now());
            println!("{}", json!({ "revoked": revoked.len() }));
        }
        Command::DeleteAccount => {
            let (sub, ended) = admin.delete_account(phone).await?;
            audit(AuditEvent::AccountDeleted)
                .user(&sub)
                .reason("admin")
                .count("sessions", ended.len() as u64)
                .emit_to_stderr(clock.now());
            println!("{}", json!({ "deleted": true, "sessions": ended.len() }));
        }
        Command::Unlock => {
            let unlocked = admin.unlock(phone).await?;
            audit(AuditEvent::PhoneUnlocked)
                .count("changed", u64::from(unlocked))
                .emit_to_stderr(clock.now());
            println!("{}", json!({ "unlocked": unlocked }));
        }
        Command::Block { reason } => {
            let (sub, revoked) = admin.block(phone, reason.as_deref()).await?;
            let mut line = audit(AuditEvent::PhoneBlocked).count("sessions", revoked.len() as u64);
            if let Some(sub) = &sub {
                line = line.user(sub);
            }
            line.emit_to_stderr(clock.now());
            println!("{}", json!({ "blocked": true, "revoked": revoked.len() }));
        }
        Command::Unblock => {
            let unblocked = admin.unblock(phone).await?;
            audit(AuditEvent::PhoneUnblocked)
                .count("changed", u64::from(unblocked))
                .emit_to_stderr(clock.now());
            println!("{}", json!({ "unblocked": unblocked }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_parse_with_their_options_in_any_order() {
        let Ok(Parsed::Run(run)) = parse(&args(
            "--stack prod revoke +77001234567 --session abc --actor alice",
        )) else {
            panic!("parses");
        };
        assert_eq!(run.stack.as_deref(), Some("prod"));
        assert_eq!(run.actor.as_deref(), Some("alice"));
        assert_eq!(
            run.command,
            Command::Revoke {
                session: Some("abc".into())
            }
        );
        assert_eq!(run.phone.e164(), "+77001234567");
        let Ok(Parsed::Run(run)) = parse(&args("block +77001234567 --reason fraud")) else {
            panic!("parses");
        };
        assert_eq!(
            run.command,
            Command::Block {
                reason: Some("fraud".into())
            }
        );
    }

    #[test]
    fn help_is_there_for_every_command() {
        assert_eq!(parse(&args("--help")), Ok(Parsed::Print(USAGE)));
        for (command, text) in [
            ("sessions", HELP_SESSIONS),
            ("revoke", HELP_REVOKE),
            ("delete-account", HELP_DELETE),
            ("unlock", HELP_UNLOCK),
            ("block", HELP_BLOCK),
            ("unblock", HELP_UNBLOCK),
        ] {
            assert_eq!(
                parse(&args(&format!("{command} --help"))),
                Ok(Parsed::Print(text))
            );
            assert!(text.starts_with(&format!("usage: foodsave-auth-admin {command}")));
        }
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        for (line, says) in [
            ("", "no command"),
            ("frobnicate +77001234567", "unknown command"),
            ("sessions", "PHONE is required"),
            ("sessions 87001234567", "+7 followed by 10 digits"),
            ("sessions +77001234567 extra", "unexpected argument"),
            ("revoke +77001234567 --session", "--session needs a value"),
            (
                "unlock +77001234567 --session x",
                "unknown option --session",
            ),
            ("--bogus sessions +77001234567", "unknown option --bogus"),
        ] {
            let err = parse(&args(line)).unwrap_err();
            assert!(err.contains(says), "{line:?}: {err}");
        }
    }
}
