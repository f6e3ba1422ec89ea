//! `tracing` events (the core's audit lines, target `audit`, and its warnings) to the Workers
//! console, where `wrangler tail` and Workers Logs show them, in the text format `berth serve`
//! prints them in (tracing-subscriber's fmt layer, "full" format, no ANSI colours) minus the
//! timestamp: there is no SystemTime on wasm32, and the console stamps each line itself.
//!
//! The format is written out here instead of using tracing-subscriber: its registry, span
//! storage and formatter layers were ~23 KB of wasm for what is one line per event (issue 19).
//! Berth records no spans, so there is no span scope to print. The unit test below holds this
//! formatter to tracing-subscriber's output, event by event.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the subscriber; called once when the isolate starts.
#[cfg(target_arch = "wasm32")]
pub fn init() {
    let _ = tracing::subscriber::set_global_default(Lines(|line: &str| worker::console_log!("{line}")));
}

/// Formats each event at INFO or above as one line and hands it to its function.
pub struct Lines<F>(pub F);

impl<F: Fn(&str) + Send + Sync + 'static> Subscriber for Lines<F> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn event(&self, event: &Event<'_>) {
        let line = line(event);
        let line = line.trim_end();
        if !line.is_empty() {
            (self.0)(line);
        }
    }

    // No spans are recorded (see the module comment): any span gets the same id and is ignored.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// `LEVEL target: message field=value ...`, as tracing-subscriber's `Format<Full>` writes it
/// without time and colours: the level right-aligned in five columns, the message first and
/// unquoted, other fields `name=Debug`, `&str` values quoted.
fn line(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut line = format!("{:>5} {}: ", meta.level().as_str(), meta.target());
    event.record(&mut Fields { line: &mut line, first: true });
    line
}

struct Fields<'a> {
    line: &'a mut String,
    first: bool,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            Some(source) => self.record_debug(
                field,
                &format_args!("{} {}.sources={}", Escaped(value), field.name(), Sources(source)),
            ),
            None => self.record_debug(field, &format_args!("{}", Escaped(value))),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        let _ = match field.name() {
            "message" => write!(self.line, "{:?}", Escaped(DebugAsDisplay(value))),
            name => write!(self.line, "{}={:?}", name.strip_prefix("r#").unwrap_or(name), value),
        };
    }
}

struct DebugAsDisplay<'a>(&'a dyn fmt::Debug);

impl fmt::Display for DebugAsDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// An error's sources as tracing-subscriber lists them: `[first, second]`, escaped.
struct Sources<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Sources<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut current = Some(self.0);
        while let Some(error) = current {
            list.entry(&format_args!("{}", Escaped(error)));
            current = error.source();
        }
        list.finish()
    }
}

/// tracing-subscriber's ANSI sanitization of messages and errors: the terminal control
/// characters ESC, BEL, BS, FF, DEL as `\x..`, C1 controls as `\u{..}`.
struct Escaped<T>(T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

struct Escaping<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", ch as u32)?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::Lines;

    /// A few events of each kind Berth logs (audit lines with `%`, plain and `?` fields, numbers,
    /// warnings and errors with messages), plus control characters and an error with sources.
    fn events() {
        let subject = "alice\x1b[31m";
        tracing::info!(target: "audit", event = "token", subject = %subject, grant = "password", status = 201u16,
            at = 1_700_000_000u64, "audit");
        tracing::warn!(target: "audit", event = "token", subject = %"bob", grant = "basic", outcome = "refused", "audit");
        tracing::warn!(upload = "u1", "could not release an upload claim: {:?} {}", "lost\x07", "\x07\x1b[2J\x08\x0c\x7f\u{9b}");
        tracing::error!(error = %"disk", "storage error");
        tracing::info!(ok = true, ratio = 0.5, count = -3i64, r#type = "x", "message with\nnewline \u{85}");
        tracing::debug!("not shown");
        let error = std::io::Error::new(std::io::ErrorKind::Other, Outer(std::io::Error::other("inner\x1b")));
        tracing::error!(error = &error as &(dyn std::error::Error + 'static), "failed");
        tracing::error!(error = &std::io::Error::other("plain") as &(dyn std::error::Error + 'static), "failed");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "outer")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_what_tracing_subscribers_fmt_layer_writes() {
        let expected = Buffer::default();
        let sink = expected.clone();
        let fmt = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .without_time()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(fmt, events);
        let expected = String::from_utf8(expected.0.lock().unwrap().clone()).unwrap();

        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        tracing::subscriber::with_default(Lines(move |line: &str| sink.lock().unwrap().push(line.to_owned())), events);
        let ours = lines.lock().unwrap().join("\n") + "\n";

        assert_eq!(ours, expected);
        assert_eq!(ours.matches(" INFO ").count() + ours.matches(" WARN ").count() + ours.matches("ERROR ").count(), 7);
    }
}
