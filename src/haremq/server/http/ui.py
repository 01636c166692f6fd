"""The dashboard page served at ``/``: a login form, then queues with counts refreshed every 2 seconds.

The page never relies on the browser's Basic-auth prompt: it posts credentials to ``/api/login``,
which sets an ``HttpOnly; SameSite=Strict`` session cookie and returns a CSRF token; state-changing
calls (logout) send that token in ``X-CSRF-Token``. After a reload, ``/api/whoami`` returns it again.
"""

DASHBOARD = """<!doctype html>
<html><head><meta charset="utf-8"><title>haremq</title>
<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}
td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}
#login input{display:block;margin:4px 0 8px}.err{color:#b00}[hidden]{display:none}
</style></head><body><h1>haremq</h1>
<form id="login" hidden><label>Username<input name="username" autocomplete="username" required></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Log in</button><p class="err" id="lerr"></p></form>
<div id="main" hidden><p><span id="who"></span> <button id="logout">Log out</button></p><p id="ov"></p>
<table><thead><tr><th>vhost / queue</th><th>ready</th><th>unacked</th><th>consumers</th><th>published</th>
<th>delivered</th><th>acked</th></tr></thead><tbody id="q"></tbody></table></div>
<script>
let csrf='',timer=null;
const $=id=>document.getElementById(id);
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function api(method,path,body){
  const h={'X-Requested-With':'XMLHttpRequest'};
  if(method!=='GET'){h['X-CSRF-Token']=csrf}
  if(body!==undefined){h['Content-Type']='application/json'}
  const r=await fetch(path,{method,headers:h,credentials:'same-origin',
    body:body===undefined?undefined:JSON.stringify(body)});
  if(r.status===401){showLogin();throw new Error('not logged in')}
  return r;
}
function showLogin(){clearInterval(timer);timer=null;$('main').hidden=true;$('login').hidden=false}
function showMain(me){csrf=me.csrf_token||'';$('who').textContent=me.name;$('login').hidden=true;
  $('main').hidden=false;refresh();if(!timer){timer=setInterval(refresh,2000)}}
async function refresh(){
  try{
    const ov=await (await api('GET','/api/overview')).json();
    $('ov').textContent=`${ov.product_name} ${ov.product_version} - `+
      `${ov.object_totals.queues} queues, ${ov.object_totals.connections} connections, `+
      `${ov.queue_totals.messages} messages`;
    const qs=await (await api('GET','/api/queues')).json();
    $('q').innerHTML=qs.map(q=>`<tr><td>${esc(q.vhost)} / ${esc(q.name)}</td>`+
      `<td>${q.messages_ready}</td><td>${q.messages_unacknowledged}</td><td>${q.consumers}</td>`+
      `<td>${q.message_stats.publish}</td><td>${q.message_stats.deliver_get}</td><td>${q.message_stats.ack}</td></tr>`
    ).join('');
  }catch(e){$('ov').textContent='unavailable: '+e}
}
$('login').addEventListener('submit',async ev=>{
  ev.preventDefault();const f=new FormData(ev.target);
  const r=await fetch('/api/login',{method:'POST',credentials:'same-origin',
    headers:{'Content-Type':'application/json','X-Requested-With':'XMLHttpRequest'},
    body:JSON.stringify({username:f.get('username'),password:f.get('password')})});
  if(r.ok){ev.target.reset();$('lerr').textContent='';showMain(await r.json())}
  else{$('lerr').textContent='Login failed'}
});
$('logout').addEventListener('click',async()=>{await api('POST','/api/logout');csrf='';showLogin()});
api('GET','/api/whoami').then(r=>r.json()).then(showMain).catch(()=>{});
</script></body></html>
"""
