//! `herald token`: print a `001` AccessToken, as an app's token server would make it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use herald_proto::ids::is_valid_id;
use herald_proto::token::{AccessToken, Privilege, APP_ID_LENGTH};
use herald_server::config::dev;
use rand::Rng as _;

use crate::CliError;

/// Arguments of `herald token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The AppId (24 characters). The defaults of --app-id and --app-key are the development app
    /// of `herald serve` with no --config.
    #[arg(long, default_value = dev::APP_ID)]
    app_id: String,
    /// The AppKey that signs the token.
    #[arg(long, default_value = dev::APP_KEY)]
    app_key: String,
    /// The user id the token is bound to.
    #[arg(long)]
    uid: String,
    /// The room for `joinRoom` (`*` for any room). Empty, the default, makes a `login` token.
    #[arg(long, default_value = "")]
    room: String,
    /// Seconds from now until the token expires; 0 never expires. Also the expiry of the
    /// PublishStream and SubscribeStream privileges the token grants.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
    expire: u32,
}

pub fn run(args: Args) -> Result<(), CliError> {
    if args.app_id.len() != APP_ID_LENGTH || !is_valid_id(&args.app_id) {
        return Err(CliError::usage(anyhow!(
            "--app-id must be {APP_ID_LENGTH} characters of [a-zA-Z0-9_@-.], as the token format requires"
        )));
    }
    if args.app_key.is_empty() {
        return Err(CliError::usage(anyhow!("--app-key must not be empty")));
    }
    if !is_valid_id(&args.uid) {
        return Err(CliError::usage(anyhow!(
            "--uid must match [a-zA-Z0-9_@-.]{{1,128}}"
        )));
    }
    if !(args.room.is_empty() || args.room == "*" || is_valid_id(&args.room)) {
        return Err(CliError::usage(anyhow!(
            "--room must be empty, * or match [a-zA-Z0-9_@-.]{{1,128}}"
        )));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let expire_at = match args.expire {
        0 => 0,
        secs => now.saturating_add(secs),
    };
    // The range the vendor's Python and Go generators draw from.
    let nonce = rand::thread_rng().gen_range(1..=99_999_999);
    let mut token = AccessToken::new(args.app_id, args.room, args.uid, nonce, now);
    token.expire_time(expire_at);
    token.add_privilege(Privilege::PublishStream, expire_at);
    token.add_privilege(Privilege::SubscribeStream, expire_at);
    println!("{}", token.serialize(&args.app_key));
    Ok(())
}
