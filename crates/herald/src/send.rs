//! `herald send`: one signed OpenAPI call, as a business server makes it.
//!
//! The response envelope is printed whatever the status; the exit code says whether it was 200.

use std::process::ExitCode;

use anyhow::anyhow;
use herald_client::{Message, OpenApiClient, DEFAULT_REGION};
use herald_proto::openapi::ApiVersion;
use herald_server::config::dev;

use crate::CliError;

/// Arguments of `herald send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Recipients by action:
  SendUnicast            --to U             (a logged-in user, outside rooms)
  SendRoomUnicast        --room R --to U    (one member of R)
  BatchSendRoomUnicast   --room R --to U1 --to U2 ...  (up to 600 members of R)
  SendBroadcast          --room R           (every member of R)

Prints the response envelope as JSON; exits 0 on HTTP 200, 1 otherwise.
The defaults of --server, --ak, --sk and --app-id are those of `herald serve` with no --config
(its development app), so this works against it as is:
  herald send SendUnicast --to u1 --message hi")]
pub struct Args {
    /// The action to call.
    #[arg(value_enum)]
    action: SendAction,
    /// The server, as http://HOST:PORT, or https://HOST:PORT for a server with [tls].
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A PEM file of certificates to trust besides the public authorities, for an https server
    /// with a self-signed or private certificate.
    #[arg(long, value_name = "PATH")]
    ca_cert: Option<std::path::PathBuf>,
    /// Access key.
    #[arg(long, default_value = dev::AK)]
    ak: String,
    /// Secret key.
    #[arg(long, default_value = dev::SK)]
    sk: String,
    /// Region of the credential scope.
    #[arg(long, default_value = DEFAULT_REGION)]
    region: String,
    /// API version of the action.
    #[arg(long = "version", value_enum, default_value_t = Version::V20230720)]
    api_version: Version,
    /// The AppId.
    #[arg(long, default_value = dev::APP_ID)]
    app_id: String,
    /// The sender id receivers see (must not be a logged-in user's id).
    #[arg(long, default_value = "server_bot")]
    from: String,
    /// The room, for the room actions.
    #[arg(long)]
    room: Option<String>,
    /// A recipient; repeat for BatchSendRoomUnicast.
    #[arg(long, value_name = "USER")]
    to: Vec<String>,
    /// Send a binary message: --message is then standard base64 of the bytes, sent as is (the
    /// server checks it), and receivers get the decoded bytes.
    #[arg(long)]
    binary: bool,
    /// The message: UTF-8 text, or base64 with --binary.
    #[arg(long)]
    message: String,
    /// Ask for a delivery report (X-Herald-Delivery-Report: true, a Herald extension): the
    /// printed answer then names each recipient's outcome in Result.DeliveryReport.
    #[arg(long)]
    report: bool,
    /// Wait up to MS milliseconds (1 to 5000) for the recipients' clients to acknowledge the
    /// message (X-Herald-Ack-Timeout-Ms, a Herald extension; implies --report): the printed
    /// report then lists them in Result.DeliveryReport.Acked.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(1..=5000))]
    ack_timeout_ms: Option<u32>,
}

/// The four messaging actions, spelled as in `?Action=`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SendAction {
    #[value(name = "SendUnicast")]
    SendUnicast,
    #[value(name = "SendRoomUnicast")]
    SendRoomUnicast,
    #[value(name = "BatchSendRoomUnicast")]
    BatchSendRoomUnicast,
    #[value(name = "SendBroadcast")]
    SendBroadcast,
}

/// The API versions, spelled as in `?Version=`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Version {
    #[value(name = "2023-07-20")]
    V20230720,
    #[value(name = "2020-12-01")]
    V20201201,
}

impl From<Version> for ApiVersion {
    fn from(v: Version) -> Self {
        match v {
            Version::V20230720 => ApiVersion::V20230720,
            Version::V20201201 => ApiVersion::V20201201,
        }
    }
}

pub async fn run(args: Args) -> Result<ExitCode, CliError> {
    let tls = crate::tls(args.ca_cert.as_deref())?;
    let api = OpenApiClient::new(&args.server, &args.ak, &args.sk)
        .map_err(CliError::usage)?
        .with_tls(&tls)
        .with_region(&args.region)
        .with_version(args.api_version.into())
        .with_delivery_report(args.report)
        .with_ack_timeout_ms(args.ack_timeout_ms);
    let message = if args.binary {
        Message::Base64(args.message)
    } else {
        Message::Text(args.message)
    };
    let (app, from) = (args.app_id.as_str(), args.from.as_str());
    let response = match (args.action, args.room.as_deref(), args.to.as_slice()) {
        (SendAction::SendUnicast, None, [to]) => api.send_unicast(app, from, to, message).await,
        (SendAction::SendRoomUnicast, Some(room), [to]) => {
            api.send_room_unicast(app, room, from, to, message).await
        }
        (SendAction::BatchSendRoomUnicast, Some(room), to) if !to.is_empty() => {
            api.batch_send_room_unicast(app, room, from, to, message)
                .await
        }
        (SendAction::SendBroadcast, Some(room), []) => {
            api.send_broadcast(app, room, from, message).await
        }
        (action, _, _) => {
            let wants = match action {
                SendAction::SendUnicast => "one --to and no --room",
                SendAction::SendRoomUnicast => "--room and one --to",
                SendAction::BatchSendRoomUnicast => "--room and at least one --to",
                SendAction::SendBroadcast => "--room and no --to",
            };
            return Err(CliError::usage(anyhow!("{action:?} takes {wants}")));
        }
    }
    .map_err(CliError::runtime)?;
    println!("{}", response.body);
    Ok(if response.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
