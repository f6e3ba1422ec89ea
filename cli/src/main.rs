//! `berth`: the local registry (`berth serve`), `berth push`, and the auth admin commands (key,
//! user, robot).

mod admin;
mod auth;
mod demo;
mod docker_archive;
mod gc;
mod image_layout;
mod local;
mod pull_sync;
mod push;
mod push_image;
mod quota;
mod relay;
mod replicate;
mod serve;
mod tls;
mod token_client;
mod upstream;
mod webhooks;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Berth: a serverless OCI container registry")]
struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "BERTH_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry locally on embedded storage (blob files + an embedded database).
    Serve(serve::ServeArgs),
    /// Collect garbage in a stopped `berth serve`'s data directory: blobs no manifest
    /// references (after --grace), abandoned uploads; --dry-run reports only (docs/gc.md).
    Gc(gc::GcArgs),
    /// Push a blob (big layers: in parallel parts straight to storage where the registry
    /// offers it, else in chunks; resumable), a manifest, or a whole image (OCI layout dir or
    /// tar, docker archive, `-` for a tar on stdin; see docs/push.md); prints its digest.
    Push(push::PushArgs),
    /// A registry on 127.0.0.1 that relays pushes of any size to a Berth that caps request
    /// bodies (Lambda, Workers): run it in CI, then `docker push 127.0.0.1:PORT/repo:tag`.
    Relay(relay::RelayArgs),
    /// Write a tiny demo image as an OCI layout (no download needed), for the README's
    /// Quickstart: `skopeo copy oci:DIR:TAG docker://…` pushes it.
    Demo(demo::DemoArgs),
    /// Token signing keys in the auth config (see docs/auth.md).
    #[command(subcommand)]
    Key(admin::KeyCommand),
    /// The auth config as one text, keys inlined, for the Worker and Lambda (`berth auth export`).
    #[command(subcommand)]
    Auth(admin::AuthCommand),
    /// Users (password logins) in the auth config.
    #[command(subcommand)]
    User(admin::AccountCommand),
    /// Robot accounts (generated secrets, for machines) in the auth config.
    #[command(subcommand)]
    Robot(admin::AccountCommand),
    /// Quota usage of a running registry (docs/quotas.md).
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Webhook deliveries kept as failed, and redelivery (docs/webhooks.md).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Copy images to other registries by a replication rule, or from one by a sync rule, by
    /// hand; rules' last results, failed entries and retry (docs/replication.md).
    Replicate(replicate::ReplicateArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    // Admin commands edit a file and need no async runtime.
    let admin = match cli.command {
        Command::Key(cmd) => admin::key(cmd),
        Command::Auth(cmd) => admin::auth(cmd),
        Command::User(cmd) => admin::user(cmd),
        Command::Robot(cmd) => admin::robot(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => return in_runtime(serve::run(args), cli.log_format),
        Command::Push(args) => return in_runtime(push::run(args), cli.log_format),
        Command::Gc(args) => {
            gc::one_malloc_arena();
            return in_runtime(gc::run(args), cli.log_format);
        }
        Command::Relay(args) => return in_runtime(relay::run(args), cli.log_format),
        Command::Quota(cmd) => return in_runtime(quota::run(cmd), cli.log_format),
        Command::Webhooks(cmd) => return in_runtime(webhooks::run(cmd), cli.log_format),
        Command::Replicate(args) => return in_runtime(replicate::run(args), cli.log_format),
    };
    match admin {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a command that needs the async runtime (serve, push) to completion. Its error is
/// printed once: as a plain line for people, or as a log record for a JSON log pipeline (a
/// plain line would break the JSON stream, and both would say it twice).
fn in_runtime(
    command: impl std::future::Future<Output = Result<(), String>>,
    log_format: LogFormat,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(command);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match log_format {
                LogFormat::Json => tracing::error!("{e}"),
                LogFormat::Text => eprintln!("berth: {e}"),
            }
            std::process::ExitCode::FAILURE
        }
    }
}
