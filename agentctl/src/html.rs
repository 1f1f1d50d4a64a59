//! `audit export --format html`: one self-contained page an auditor can open anywhere. Its first
//! screen answers the auditor's questions (the goal, the plan and who approved it when, the
//! outcome, each entity's rows migrated, rejected and validated, the rejections with their
//! reasons, the model's calls and cost, the chain's state and head); then the timeline, grouped
//! by phase, each decision with its reason. Everything is rendered in the HTML, so it reads with
//! JavaScript off; a few lines of script only filter the timeline by agent and kind. No external
//! file, font or script. Events carry their summaries and reasons, not their full detail (the
//! JSONL export has that), so that a run of millions of rows stays a page of a few hundred KB.

use runtime::audit::{AuditEvent, Verification};
use tools::control::{RejectionGroup, ReportEntity, RunRow};

/// What the control tables say of the run, besides its events.
pub struct Facts<'a> {
    pub entities: &'a [ReportEntity],
    pub rejections: &'a [RejectionGroup],
    /// Model calls, prompt and completion tokens, cost in dollars.
    pub llm: (i64, i64, i64, Option<f64>),
}

/// The phases of a run, in the order the timeline shows them, by the agent that acts in each.
const PHASES: [(&str, &[&str]); 7] = [
    ("Analysis", &["schema_analysis"]),
    ("Mapping", &["data_mapping"]),
    ("Planning", &["planning", "guidance"]),
    ("Approval", &[]),
    ("Execution", &["execution"]),
    ("Validation", &["validation"]),
    ("Run and coordination", &["orchestrator", "operator"]),
];

fn phase(e: &AuditEvent) -> usize {
    if e.agent == "operator" && e.kind == "decision" && e.summary.contains("plan ") {
        return 3;
    }
    PHASES
        .iter()
        .position(|(_, agents)| agents.contains(&e.agent.as_str()))
        .unwrap_or(PHASES.len() - 1)
}

pub fn page(
    run: &RunRow,
    events: &[AuditEvent],
    verification: &Verification,
    facts: &Facts,
) -> String {
    let mut out = String::with_capacity(64 * 1024 + events.len() * 200);
    let title = format!("agentctl run {}", run.run_id);
    out.push_str(&format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta \
            charset=\"utf-8\"><title>{}</title>\n{STYLE}</head><body>\n",
        escape(&title)
    ));
    out.push_str(&format!("<h1>Audit of {}</h1>\n", escape(&title)));
    summary(&mut out, run, events, verification, facts);
    timeline(&mut out, events);
    out.push_str(SCRIPT);
    out.push_str("</body></html>\n");
    out
}

fn summary(
    out: &mut String,
    run: &RunRow,
    events: &[AuditEvent],
    verification: &Verification,
    facts: &Facts,
) {
    let rows = fact_rows(run, events, verification, facts);
    out.push_str("<section id=\"summary\"><table class=\"facts\">\n");
    for (name, value, class) in &rows {
        out.push_str(&format!(
            "<tr><th>{name}</th><td class=\"{class}\">{}</td></tr>\n",
            escape(value)
        ));
    }
    out.push_str("</table>\n");
    entity_table(out, facts);
    rejection_table(out, facts);
    out.push_str("</section>\n");
}

/// The summary's facts, one (name, value, class) a row: goal, command, outcome, times, plan,
/// approval, rows, validation, the model's use, the audit chain.
fn fact_rows<'a>(
    run: &RunRow,
    events: &[AuditEvent],
    verification: &Verification,
    facts: &Facts,
) -> Vec<(&'a str, String, &'a str)> {
    // A decision's own detail, beside its rationale.
    let detail = |e: &AuditEvent| {
        serde_json::from_str::<serde_json::Value>(&e.detail)
            .map(|d| d["detail"].clone())
            .unwrap_or_default()
    };
    let approval = events.iter().find(|e| phase(e) == 3);
    let hash = approval.and_then(|e| detail(e)["hash"].as_str().map(str::to_owned)).or_else(|| {
        events.iter().find_map(|e| {
            e.summary.split("(plan ").nth(1).map(|h| h.trim_end_matches(')').to_owned())
        })
    });
    let mut rows: Vec<(&str, String, &str)> = vec![
        ("Goal", run.goal.clone().unwrap_or_else(|| "(none)".into()), ""),
        ("Command", format!("agentctl {}", run.command), ""),
        (
            "Outcome",
            format!(
                "{}{}",
                run.outcome,
                run.outcome_detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
            if run.outcome == "succeeded" { "good" } else { "bad" },
        ),
        (
            "When",
            format!(
                "started {}{}",
                run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                run.finished_at
                    .map(|t| format!(", ended {}", t.format("%H:%M:%S UTC")))
                    .unwrap_or_default()
            ),
            "",
        ),
        ("Plan", hash.unwrap_or_else(|| "(no plan)".into()), "mono"),
    ];
    rows.push(match approval {
        Some(e) => {
            let who = detail(e)["by"].as_str().map(|b| format!(" by {b}")).unwrap_or_default();
            (
                "Approval",
                format!("{}{who} at {}", e.summary, e.at.format("%Y-%m-%d %H:%M:%S UTC")),
                "",
            )
        }
        None => ("Approval", "none recorded (nothing was run on a plan)".into(), ""),
    });
    rows.extend(accounting_rows(facts));
    let (calls, prompt, completion, cost) = facts.llm;
    rows.push((
        "Language model",
        match calls {
            0 => "not used".into(),
            _ => format!(
                "{calls} calls, {prompt} prompt and {completion} completion tokens{}",
                cost.map(|c| format!(", about ${c:.4}")).unwrap_or_default()
            ),
        },
        "",
    ));
    rows.push(match &verification.first_bad {
        None => (
            "Audit chain",
            format!("intact: {} events, head {}", verification.events, verification.head_hash),
            "good mono",
        ),
        Some(b) => ("Audit chain", format!("BROKEN at {b}"), "bad"),
    });
    rows
}

/// The rows and validation facts of the run's entities (none without entities).
fn accounting_rows(facts: &Facts) -> Vec<(&'static str, String, &'static str)> {
    let totals = tools::control::Totals::of(facts.entities);
    if facts.entities.is_empty() {
        return Vec::new();
    }
    let mut rows = Vec::new();
    let accounted =
        if totals.accounted() { "every row accounted for" } else { "NOT every row accounted for" };
    let kept = match totals.kept {
        0 => String::new(),
        n => format!(", {n} kept from before agentctl"),
    };
    rows.push((
        "Rows",
        format!(
            "{} migrated{kept} and {} rejected of {} ({accounted})",
            totals.migrated, totals.rejected, totals.source_rows
        ),
        "",
    ));
    let validated = facts.entities.iter().filter(|e| e.validated == Some(true)).count();
    let failed: Vec<&str> = facts
        .entities
        .iter()
        .filter(|e| e.validated == Some(false))
        .map(|e| e.target_table.as_str())
        .collect();
    rows.push((
        "Validation",
        match failed.is_empty() {
            true => format!("{validated} of {} entities validated", facts.entities.len()),
            false => format!(
                "FAILED for {}; {validated} of {} validated",
                failed.join(", "),
                facts.entities.len()
            ),
        },
        if failed.is_empty() { "good" } else { "bad" },
    ));
    rows
}

/// Each entity's rows and validation.
fn entity_table(out: &mut String, facts: &Facts) {
    if facts.entities.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Entities</h2>\n<table><thead><tr><th>entity</th><th class=\"n\">source \
        rows</th><th class=\"n\">migrated</th><th \
        class=\"n\">rejected</th><th>validation</th></tr></thead><tbody>\n",
    );
    for e in facts.entities {
        let (verdict, class) = match e.validated {
            Some(true) => ("passed", "good"),
            Some(false) => ("FAILED", "bad"),
            None => ("not validated", ""),
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td \
                class=\"n{}\">{}</td><td class=\"{class}\">{verdict}</td></tr>\n",
            escape(&e.target_table),
            e.source_rows,
            match e.kept {
                0 => e.migrated.to_string(),
                kept => format!("{} + {kept} kept", e.migrated),
            },
            if e.rejected > 0 { " reject" } else { "" },
            e.rejected
        ));
    }
    out.push_str("</tbody></table>\n");
}

/// The rejections, grouped by table and rule, with an example of each.
fn rejection_table(out: &mut String, facts: &Facts) {
    if facts.rejections.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Rejections, by reason</h2>\n<table \
        class=\"rejections\"><thead><tr><th>table</th><th>rule</th><th \
        class=\"n\">rows</th><th>example reason</th><th>example \
        keys</th></tr></thead><tbody>\n",
    );
    for g in facts.rejections {
        out.push_str(&format!(
            "<tr class=\"reject\"><td>{}</td><td>{}</td><td \
                class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&g.source_table),
            escape(&g.rule),
            g.count,
            escape(&g.example_reason),
            escape(&g.example_keys.join(", "))
        ));
    }
    out.push_str("</tbody></table>\n");
}

fn timeline(out: &mut String, events: &[AuditEvent]) {
    out.push_str(
        "<h2>Timeline, by phase</h2>\n<p class=\"filters\">Agent <select \
        id=\"agent\"><option value=\"\">all</option></select> Kind <select id=\"kind\"><option \
        value=\"\">all</option></select></p>\n",
    );
    for (i, (name, _)) in PHASES.iter().enumerate() {
        let in_phase: Vec<&AuditEvent> = events.iter().filter(|e| phase(e) == i).collect();
        if in_phase.is_empty() {
            continue;
        }
        // The coordination between agents is noise to most readers: closed until opened.
        let open = if i == PHASES.len() - 1 { "" } else { " open" };
        out.push_str(&format!(
            "<details class=\"phase\"{open}><summary>{name} <span class=\"count\">({} \
                events)</span></summary>\n<table><tbody>\n",
            in_phase.len()
        ));
        for e in in_phase {
            let reject = e.summary.contains("reject")
                && !e.summary.contains(" 0 rejected")
                && !e.summary.contains(" 0 will be rejected");
            let class = format!("{}{}", e.kind, if reject { " reject" } else { "" });
            let why = (e.kind == "decision")
                .then(|| serde_json::from_str::<serde_json::Value>(&e.detail).ok())
                .flatten()
                .and_then(|d| {
                    d["rationale"]
                        .as_str()
                        .map(|r| format!("<div class=\"why\">why: {}</div>", escape(r)))
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<tr class=\"{class}\" data-agent=\"{agent}\" data-kind=\"{kind}\"><td \
                    class=\"n\">{}</td><td>{}</td><td>{agent}</td><td>{kind}</td><td>{}{why}</td></tr>\n",
                e.seq,
                e.at.format("%H:%M:%S%.3f"),
                escape(&e.summary),
                agent = escape(&e.agent),
                kind = escape(&e.kind),
            ));
        }
        out.push_str("</tbody></table></details>\n");
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const STYLE: &str = r#"<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:80em}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:3px 6px;vertical-align:top;text-align:left}
table.facts th{width:11em;color:#555}.n{text-align:right;font-variant-numeric:tabular-nums}
.mono{font-family:monospace;word-break:break-all}.good{color:#176b2c}.bad{color:#a01616;font-weight:bold}
.decision{background:#f4f8ff}.error{background:#fff2f2}.why{color:#345;font-style:italic}
.reject{background:#fff4e5}td.reject{font-weight:bold;color:#8a4b00}
details.phase{margin:.6em 0}details.phase>summary{font-weight:bold;cursor:pointer}.count{font-weight:normal;color:#777}
</style>
"#;

/// Fills the filters from the rows and hides the rows they leave out; the page reads the same
/// without it.
const SCRIPT: &str = r#"<script>
const rows = [...document.querySelectorAll('tr[data-agent]')];
const fill = (id) => { const s = document.getElementById(id);
  [...new Set(rows.map(r => r.dataset[id]))].sort().forEach(v => { const o = document.createElement('option'); o.value = o.textContent = v; s.appendChild(o); });
  s.onchange = filter; };
function filter() {
  const a = document.getElementById('agent').value, k = document.getElementById('kind').value;
  for (const r of rows) r.hidden = (a && r.dataset.agent !== a) || (k && r.dataset.kind !== k);
}
fill('agent'); fill('kind');
</script>
"#;

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_in_a_value_is_text() {
        assert_eq!(
            escape("table <!--<script> & \"x\" 'y'"),
            "table &lt;!--&lt;script&gt; &amp; &quot;x&quot; &#39;y&#39;"
        );
    }
}
