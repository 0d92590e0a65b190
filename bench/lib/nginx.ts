// nginx in front of a gRPC server (`grpc_pass`): the hop a user would otherwise put there, and
// the one the gateway is measured against. Configured as people run it in production: HTTP/2
// on the way in, kept-alive HTTP/2 connections to the upstream, no access log.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureCommand, freePort } from "@protomesh/devkit";

/** A running nginx: its port and master process (its workers are the master's children). */
export interface Nginx {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

// One worker: the gateway is one event loop, so the peer gets one core's worth of process too
// (and its CPU per request is not split between workers fighting over two cores).
const WORKERS = 1;
const READY_TIMEOUT_MS = 10_000;

/** Starts nginx on a free port, proxying every gRPC call to `upstream` (host:port). */
export async function startNginx(upstream: string): Promise<Nginx> {
  ensureCommand("nginx", "nginx");
  const dir = await mkdtemp(join(tmpdir(), "protomesh-nginx-"));
  const port = await freePort();
  const conf = join(dir, "nginx.conf");
  await writeFile(
    conf,
    `daemon off;
worker_processes ${WORKERS};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  # nginx closes a connection after 1,000 requests by default (a GOAWAY mid-load, which h2load
  # counted as failed requests); the gateway sets no such cap, so neither does its peer here.
  keepalive_requests 1000000;
  upstream user { server ${upstream}; keepalive 32; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port} http2;
    location / { grpc_pass grpc://user; }
  }
}
`,
  );
  // -e: nginx opens its compiled-in error log before reading the config; keep it in the dir too.
  const child = spawn("nginx", ["-p", dir, "-c", conf, "-e", join(dir, "error.log")], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // If the bench dies first (an error, Ctrl-C: procs.ts turns signals into an exit), the master
  // must still go; SIGTERM, not SIGKILL, so that it takes its workers with it.
  const orphaned = () => child.kill("SIGTERM");
  process.once("exit", orphaned);
  const stop = async () => {
    process.off("exit", orphaned);
    if (child.exitCode === null && child.signalCode === null) {
      // SIGQUIT: graceful; the workers finish and exit with the master.
      child.kill("SIGQUIT");
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await listening(port, child, () => stderr);
  } catch (err) {
    child.kill("SIGKILL");
    await stop();
    throw err;
  }
  return { port, pid: child.pid as number, stop };
}

// nginx says nothing when it is ready: connect until it accepts, or it exits, or time runs out.
async function listening(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${stderr()}`);
    const accepted = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (accepted) return;
    if (Date.now() > deadline)
      throw new Error(`nginx: not listening on ${port} after ${READY_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}
