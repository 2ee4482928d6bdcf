"""Cross-cutting helpers every layer may use: errors, quoting, redaction, the log guard, retries, the heap."""
