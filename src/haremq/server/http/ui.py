"""The dashboard page served at ``/``: queues with counts, refreshed every 2 seconds."""

DASHBOARD = """<!doctype html>
<html><head><meta charset="utf-8"><title>haremq</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}
</style></head><body><h1>haremq</h1><p id="ov"></p>
<table><thead><tr><th>vhost / queue</th><th>ready</th><th>unacked</th><th>consumers</th><th>published</th>
<th>delivered</th><th>acked</th></tr></thead><tbody id="q"></tbody></table>
<script>
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function refresh(){
  try{
    const ov=await (await fetch('/api/overview')).json();
    document.getElementById('ov').textContent=`${ov.product_name} ${ov.product_version} - `+
      `${ov.object_totals.queues} queues, ${ov.object_totals.connections} connections, `+
      `${ov.queue_totals.messages} messages`;
    const qs=await (await fetch('/api/queues')).json();
    document.getElementById('q').innerHTML=qs.map(q=>`<tr><td>${esc(q.vhost)} / ${esc(q.name)}</td>`+
      `<td>${q.messages_ready}</td><td>${q.messages_unacknowledged}</td><td>${q.consumers}</td>`+
      `<td>${q.message_stats.publish}</td><td>${q.message_stats.deliver_get}</td><td>${q.message_stats.ack}</td></tr>`
    ).join('');
  }catch(e){document.getElementById('ov').textContent='unavailable: '+e}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"""
