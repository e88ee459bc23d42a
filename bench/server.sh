# What run.sh and profile.sh share: the repository's paths (sourcing this
# moves to its root) and the benchmark's data server, nginx serving the
# pages gen_data.py wrote, with a bearer-token check.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
bench=$root/bench
flow=$root/target/release/flow

# bench_nginx WORK PORT TOKEN: writes WORK/nginx/nginx.conf for pages under
# WORK/www, listening on 127.0.0.1:PORT, and starts nginx in the foreground
# of a background job (the caller keeps its pid in $!).
bench_nginx() {
  local work=$1 port=$2 token=$3
  mkdir -p "$work/nginx/tmp"
  cat > "$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  # Off, as an API answering from memory with Nagle off would be: with it on,
  # nginx holds back the last part of a page (corked, then under Nagle) until
  # the client's delayed ACK, 40 ms later, whenever a client reads more
  # slowly than nginx sends.
  tcp_nopush off;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/tmp/body;
  proxy_temp_path $work/nginx/tmp/proxy;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  types { application/json json; }
  default_type application/json;
  log_format stamp '\$msec \$status';
  root $work/www;
  server {
    listen 127.0.0.1:$port;
    # Neiros-style pages: /SET/projects?page=N; past the last page, an empty one.
    location ~ ^/(?<set>d[a-z0-9]+)/projects\$ {
      if (\$http_authorization != "Bearer $token") { return 401 '{"message":"Unauthenticated."}'; }
      try_files /\$set/projects/\$arg_page.json /\$set/projects/empty.json;
    }
    # Offset listing without a total: /SET/offset?offset=K&count=200.
    location ~ ^/(?<set>d[a-z0-9]+)/offset\$ {
      if (\$http_authorization != "Bearer $token") { return 401 '{"message":"Unauthenticated."}'; }
      if (\$arg_count != "200") { return 400 '{"message":"count must be 200"}'; }
      try_files /\$set/offset/\$arg_offset.json /\$set/offset/empty.json;
    }
    # Creates: every POST is logged with its time, to count and pace them.
    location ~ ^/d[a-z0-9]+/create\$ {
      access_log $work/create.log stamp;
      if (\$http_authorization != "Bearer $token") { return 401 '{"message":"Unauthenticated."}'; }
      return 200 '{"ok":true}';
    }
  }
}
EOF
  nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
}
