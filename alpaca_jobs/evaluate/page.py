"""The rating page (one self-contained document; all text is inserted as text, never as HTML)."""

RATE_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Which answer is better?</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
         color: #222; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  .box { white-space: pre-wrap; border: 1px solid #ccc; border-radius: 4px; padding: .75rem;
         background: #fafafa; min-height: 3rem; }
  .note { color: #666; font-size: .9rem; }
  button { font: inherit; padding: .4rem 1rem; margin-right: .5rem; }
  [hidden] { display: none; }
</style>
</head>
<body>
<h1>Which answer is better?</h1>
<p class="note">You see a request and two answers in random order. Pick the one that serves the
person better, or call it a tie. Your name keeps your place: come back with the same name to
continue.</p>
<p><label>Your name <input id="rater" maxlength="40" placeholder="e.g. maria"></label>
<button id="start">Start</button> <span id="progress" class="note"></span></p>
<p id="message" class="note" role="status"></p>
<section id="task" hidden>
  <h2>Request</h2>
  <div id="instruction" class="box"></div>
  <div id="input-wrap"><h3>Input</h3><div id="input" class="box"></div></div>
  <div class="pair">
    <div><h2>Answer A</h2><div id="left" class="box"></div></div>
    <div><h2>Answer B</h2><div id="right" class="box"></div></div>
  </div>
  <p><button id="choose-A">A is better</button><button id="choose-tie">Tie</button>
  <button id="choose-B">B is better</button></p>
</section>
<p id="done" hidden>All done: every item has your rating. Thank you.</p>
<script>
const $ = (id) => document.getElementById(id);
let rater = "", item = null;
function show(p) { $("progress").textContent = p ? `${p.rated} of ${p.total} rated` : ""; }
async function load() {
  rater = $("rater").value.trim();
  const r = await fetch("/api/next?rater=" + encodeURIComponent(rater));
  const body = await r.json();
  if (!r.ok) { $("message").textContent = body.error.message; return; }
  $("message").textContent = "";
  show(body.progress);
  item = body.item;
  $("task").hidden = item === null;
  $("done").hidden = item !== null;
  if (item === null) return;
  $("instruction").textContent = item.instruction;
  $("input").textContent = item.input;
  $("input-wrap").hidden = !item.input.trim();
  $("left").textContent = item.outputs[0];
  $("right").textContent = item.outputs[1];
  window.scrollTo(0, 0);
}
async function choose(choice) {
  if (!item) return;
  const r = await fetch("/api/ratings", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({rater: rater, item: item.id, choice: choice})});
  const body = await r.json();
  if (!r.ok) { $("message").textContent = body.error.message; return; }
  await load();
}
$("start").onclick = load;
$("rater").addEventListener("keydown", (e) => { if (e.key === "Enter") load(); });
for (const c of ["A", "tie", "B"]) $("choose-" + c).onclick = () => choose(c);
const given = new URLSearchParams(location.search).get("rater");
if (given) { $("rater").value = given; load(); }
</script>
</body>
</html>
"""
