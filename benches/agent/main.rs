//! The benchmark driver behind `scripts/bench.sh`: starts the release agent and the sandbox on loopback and measures
//! submission, sending, inbound mail and resources, each beside a reference measured in the same run. Prints a
//! Markdown report and writes it to `--out FILE` when given.
//!
//! Usage: `cargo bench --bench agent -- [--quick] [--postfix] [--only submission,sending,inbound,resources]
//! [--out FILE]`. `--quick` uses small sizes; `--postfix` adds the Postfix reference (root, Postfix installed).

#[path = "../../tests/support/mod.rs"]
mod support;

mod harness;
mod inbound;
mod resources;
mod sending;
mod submission;

use std::fmt::Write;

/// The report: Markdown tables, one per section, and named figures for the summary.
#[derive(Default)]
pub struct Report {
    text: String,
    figures: Vec<(String, f64)>,
}

impl Report {
    fn section(&mut self, title: &str, note: &str) {
        let _ = write!(
            self.text,
            "\n### {title}\n\n{note}\n\n| measurement | result | reference or target |\n| --- | --- | --- |\n"
        );
        println!("\n== {title}");
    }

    fn row(&mut self, what: &str, result: &str, reference: &str) {
        let _ = writeln!(self.text, "| {what} | {result} | {reference} |");
        println!("  {what}: {result} ({reference})");
    }

    fn figure(&mut self, name: &str, value: f64) {
        self.figures.push((name.to_string(), value));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|arg| arg == "--quick");
    let postfix = args.iter().any(|arg| arg == "--postfix");
    let value_of = |flag: &str| args.iter().position(|arg| arg == flag).and_then(|at| args.get(at + 1)).cloned();
    let only = value_of("--only");
    let out = value_of("--out");
    let wanted = |name: &str| only.as_ref().is_none_or(|only| only.split(',').any(|part| part == name));
    let sizes = if quick { harness::Sizes::quick() } else { harness::Sizes::full() };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the runtime starts");
    let mut report = Report::default();
    let _ = writeln!(report.text, "Sizes: {} ({sizes:?})", if quick { "quick" } else { "full" });
    runtime.block_on(async {
        if wanted("submission") {
            submission::measure(sizes, &mut report).await;
        }
        if wanted("sending") {
            sending::measure(sizes, postfix, &mut report).await;
        }
        if wanted("inbound") {
            inbound::measure(sizes, &mut report).await;
        }
        if wanted("resources") {
            resources::measure(sizes, &mut report).await;
        }
    });

    let _ = writeln!(report.text, "\nFigures:\n\n```");
    for (name, value) in &report.figures {
        let _ = writeln!(report.text, "{name} = {value:.2}");
    }
    let _ = writeln!(report.text, "```");
    println!("{}", report.text);
    if let Some(out) = out {
        std::fs::write(&out, &report.text).unwrap_or_else(|error| panic!("cannot write {out}: {error}"));
    }
}
