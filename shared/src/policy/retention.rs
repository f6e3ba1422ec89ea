//! Retention (placeholder)
