//! `tracing` events (the core's audit lines, target `audit`, and its warnings) to the Workers
//! console, where `wrangler tail` and Workers Logs show them. Formatted by tracing-subscriber's
//! fmt layer exactly as `berth serve` prints them, minus the timestamp: there is no SystemTime
//! on wasm32, and the console stamps each line itself.

use std::io::Write;

/// Installs the subscriber; called once when the isolate starts.
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .without_time()
        .with_ansi(false)
        .with_writer(|| ConsoleLine(Vec::new()))
        .try_init();
}

/// One formatted event, written to the console as one line when the formatter is done with it.
struct ConsoleLine(Vec<u8>);

impl Write for ConsoleLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ConsoleLine {
    fn drop(&mut self) {
        let line = String::from_utf8_lossy(&self.0);
        let line = line.trim_end();
        if !line.is_empty() {
            worker::console_log!("{line}");
        }
    }
}
