//! The page: one self-contained HTML file (styles, script, charts as inline SVG, and the data
//! as inline JSON); nothing is fetched when it is opened.

use serde_json::Value;

use super::chart::{self, Chart};

/// The id of the `<script type="application/json">` element that holds the report's data.
pub const DATA_ID: &str = "aiperf-report-data";

/// One section of a report. A report is a list of sections, rendered in order: new kinds of
/// data (server metrics, GPU telemetry, time slices) add sections to the list.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: String,
    pub title: String,
    /// Its body: HTML (text escaped with [`esc`], charts with [`charts`]).
    pub html: String,
}

impl Section {
    pub fn new(id: &str, title: &str, html: String) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            html,
        }
    }
}

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Charts as a responsive grid of inline SVGs (each one scales to its cell's width).
pub fn charts(list: &[Chart]) -> Result<String, String> {
    let mut out = String::from("<div class=\"grid\">");
    for c in list {
        let svg = chart::svg(c)?;
        // plotters writes fixed width/height attributes; a viewBox lets CSS scale it.
        let svg = svg.replacen(
            "<svg ",
            &format!(
                "<svg viewBox=\"0 0 {} {}\" preserveAspectRatio=\"xMidYMid meet\" role=\"img\" aria-label=\"{}\" ",
                chart::WIDTH,
                chart::HEIGHT,
                esc(&c.title)
            ),
            1,
        );
        out.push_str(&format!(
            "<figure id=\"chart-{}\" data-chart=\"{}\">{svg}</figure>",
            esc(&c.id),
            esc(&c.id)
        ));
    }
    out.push_str("</div>");
    Ok(out)
}

/// A table: header cells, then rows of cells (already HTML).
pub fn table(head: &[String], rows: &[Vec<String>], class: &str) -> String {
    let mut s = format!("<div class=\"scroll\"><table class=\"{class}\"><thead><tr>");
    for h in head {
        s.push_str(&format!("<th>{h}</th>"));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{c}</td>"));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
    s
}

/// JSON made safe inside a `<script>` element: no `</script>` or comment opener can end it.
pub fn script_json(v: &Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#5b6474;--line:#e2e6ee;--bg:#fff;--accent:#0072b2;--bad:#b3261e;--ok:#1b7f3b;--warn:#9a6700}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:16px 20px;border-bottom:1px solid var(--line)}
header h1{margin:0;font-size:1.35rem}
header p{margin:4px 0 0;color:var(--muted)}
nav{position:sticky;top:0;background:#f7f8fb;border-bottom:1px solid var(--line);padding:6px 20px;overflow-x:auto;white-space:nowrap;z-index:1}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;font-size:.9rem}
main{padding:0 20px 40px;max-width:1600px}
section{margin-top:24px}
h2{font-size:1.1rem;border-bottom:1px solid var(--line);padding-bottom:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr));gap:12px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:4px;background:#fff}
figure svg{width:100%;height:auto;display:block}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.88rem;min-width:50%}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
table.kv td{text-align:left;white-space:normal}
th{background:#f7f8fb;cursor:pointer;user-select:none}
.verdict-ok{color:var(--ok);font-weight:600}.verdict-bad{color:var(--bad);font-weight:600}
.better{color:var(--ok)}.worse{color:var(--bad)}
.note{color:var(--muted);font-size:.9rem}
ul.warn li{color:var(--warn)}
@media (max-width:600px){body{font-size:14px}main,header,nav{padding-left:10px;padding-right:10px}th,td{padding:3px 6px}}
"#;

/// Sorts a table by the clicked column (numbers as numbers), so long tables can be read
/// either way. Nothing else: the page is complete without script.
const SCRIPT: &str = r#"
(function(){
  var data = JSON.parse(document.getElementById("aiperf-report-data").textContent);
  document.documentElement.setAttribute("data-report-kind", data.kind);
  function key(td){var t=td.textContent.trim();var n=parseFloat(t.replace(/[^0-9eE+.\-]/g,""));return isNaN(n)?t:n;}
  document.querySelectorAll("table:not(.kv) th").forEach(function(th){
    th.title="sort";
    th.addEventListener("click",function(){
      var table=th.closest("table"),body=table.tBodies[0],i=Array.prototype.indexOf.call(th.parentNode.children,th);
      var asc=th.getAttribute("data-sort")!=="asc";
      Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute("data-sort");});
      th.setAttribute("data-sort",asc?"asc":"desc");
      var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);if(x===y)return 0;var r=(typeof x===typeof y)?(x<y?-1:1):(typeof x==="number"?-1:1);return asc?r:-r;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
})();
"#;

/// The whole page.
pub fn page(title: &str, subtitle: &str, sections: &[Section], data: &Value) -> String {
    let mut nav = String::new();
    let mut body = String::new();
    for s in sections {
        nav.push_str(&format!(
            "<a href=\"#{}\">{}</a>",
            esc(&s.id),
            esc(&s.title)
        ));
        body.push_str(&format!(
            "<section id=\"{}\"><h2>{}</h2>{}</section>\n",
            esc(&s.id),
            esc(&s.title),
            s.html
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"generator\" content=\"aiperf {version}\">\
<title>{t}</title><style>{STYLE}</style></head>\n<body><header><h1>{t}</h1><p>{sub}</p></header>\
<nav>{nav}</nav><main>\n{body}</main>\n\
<script type=\"application/json\" id=\"{DATA_ID}\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        t = esc(title),
        sub = esc(subtitle),
        data = script_json(data),
    )
}

/// The report's data read back out of a page (what tests and tools use).
pub fn extract_data(html: &str) -> Option<Value> {
    let open = format!("<script type=\"application/json\" id=\"{DATA_ID}\">");
    let start = html.find(&open)? + open.len();
    let end = start + html[start..].find("</script>")?;
    serde_json::from_str(&html[start..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_survives_a_closing_script_tag_in_its_strings() {
        let v = serde_json::json!({"kind": "run", "label": "</script><b>x & y</b>"});
        let html = page(
            "T <1>",
            "s",
            &[Section::new("a", "A", "<p>x</p>".into())],
            &v,
        );
        assert_eq!(
            html.matches("</script>").count(),
            2,
            "only the two real ends"
        );
        assert_eq!(extract_data(&html), Some(v));
        assert!(html.contains("<title>T &lt;1&gt;</title>"));
        assert!(html.contains("<a href=\"#a\">A</a>"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing fetched"
        );
    }
}
