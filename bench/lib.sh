# Helpers shared by the bench scripts (sourced by bench/*/run.sh, not run on its own).
# Everything listens on 127.0.0.1 only.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Starts a stand-in kubelet /healthz answering 200 "ok" on a port the kernel picks (K3s cannot
# run here; with it a daemon's first apply takes the real health-gated path). Sets `hport` and
# adds the server's pid to the caller's `pids` array.
start_standin_kubelet() {
  local portfile
  portfile=$(mktemp)
  python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
' "$portfile" &
  pids+=($!)
  until [ -s "$portfile" ]; do sleep 0.05; done
  hport=$(cat "$portfile")
  rm -f "$portfile"
}
