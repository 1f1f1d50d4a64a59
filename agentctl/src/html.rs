//! `audit export --format html`: one self-contained page an auditor can open anywhere. The
//! events are embedded as JSON and rendered by a few lines of script: a timeline, filters by
//! agent and kind, and each decision with its rationale. No external file, font or script.

use runtime::audit::{AuditEvent, Verification};
use tools::control::RunRow;

use crate::audit::event_json;

pub fn page(run: &RunRow, events: &[AuditEvent], verification: &Verification) -> String {
    let verdict = match &verification.first_bad {
        None => format!("chain intact: {} events, head {}", verification.events, verification.head_hash),
        Some(b) => format!("CHAIN BROKEN at {b}"),
    };
    let data: Vec<serde_json::Value> = events.iter().map(event_json).collect();
    let data = embedded(&serde_json::Value::Array(data));
    let title = format!("agentctl run {}", run.run_id);
    let summary = format!(
        "agentctl {}{} — {} — started {}{}",
        run.command,
        run.goal.as_ref().map(|g| format!(" \"{g}\"")).unwrap_or_default(),
        run.outcome,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        run.finished_at.map(|t| format!(", ended {}", t.format("%H:%M:%S UTC"))).unwrap_or_default()
    );
    TEMPLATE
        .replace("{{title}}", &escape(&title))
        .replace("{{summary}}", &escape(&summary))
        .replace("{{verdict}}", &escape(&verdict))
        .replace("{{data}}", &data)
}

/// JSON to embed in a `<script>` element: no `<`, `>` or `&` at all (each written as its
/// `\u` escape, which JSON.parse reads back), so that nothing in a value (`</script>`, `<!--`
/// and `<script` that put the parser in its escaped states) can end or bend the element.
fn embedded(data: &serde_json::Value) -> String {
    serde_json::to_string(data).expect("events serialize").replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const TEMPLATE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.3em}.verdict{font-family:monospace}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
.decision{background:#f4f8ff}.error{background:#fff2f2}.why{color:#345;font-style:italic}
pre{white-space:pre-wrap;margin:0;font-size:12px;max-height:18em;overflow:auto}
</style></head><body>
<h1>{{title}}</h1><p>{{summary}}</p><p class="verdict">{{verdict}}</p>
<p>Agent <select id="agent"><option value="">all</option></select>
Kind <select id="kind"><option value="">all</option></select></p>
<table><thead><tr><th>#</th><th>time</th><th>agent</th><th>kind</th><th>what</th></tr></thead><tbody id="rows"></tbody></table>
<script id="events" type="application/json">{{data}}</script>
<script>
const events = JSON.parse(document.getElementById('events').textContent);
const fill = (id, key) => { const s = document.getElementById(id);
  [...new Set(events.map(e => e[key]))].sort().forEach(v => { const o = document.createElement('option'); o.value = o.textContent = v; s.appendChild(o); });
  s.onchange = render; };
function cell(tr, text) { const td = document.createElement('td'); td.textContent = text; tr.appendChild(td); return td; }
function render() {
  const a = document.getElementById('agent').value, k = document.getElementById('kind').value;
  const body = document.getElementById('rows'); body.textContent = '';
  for (const e of events) {
    if ((a && e.agent !== a) || (k && e.kind !== k)) continue;
    const tr = document.createElement('tr'); tr.className = e.kind;
    cell(tr, e.seq); cell(tr, e.at); cell(tr, e.agent); cell(tr, e.kind);
    const what = cell(tr, e.summary);
    if (e.kind === 'decision' && e.detail && e.detail.rationale) {
      const p = document.createElement('div'); p.className = 'why'; p.textContent = 'why: ' + e.detail.rationale; what.appendChild(p); }
    const d = document.createElement('details'), s = document.createElement('summary'), pre = document.createElement('pre');
    s.textContent = 'detail'; pre.textContent = JSON.stringify(e.detail, null, 2); d.appendChild(s); d.appendChild(pre); what.appendChild(d);
    body.appendChild(tr);
  }
}
fill('agent', 'agent'); fill('kind', 'kind'); render();
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::embedded;

    #[test]
    fn embedded_json_holds_nothing_a_parser_reads_as_markup_and_parses_back() {
        let value = serde_json::json!({"summary": "table <!--<script> and </script><b>&amp;</b>"});
        let text = embedded(&value);
        assert!(!text.contains(['<', '>', '&']), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value);
    }
}
