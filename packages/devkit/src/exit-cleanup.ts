/**
 * Last-resort cleanup of servers and temp dirs when the process ends without stopping them (a test
 * that crashed, a runner killed on timeout), so no server outlives the process that started it.
 */

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

function runAll(): void {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Best effort: the process is going away and one failure must not skip the others.
    }
  }
  cleanups.clear();
}

function onSignal(signal: NodeJS.Signals): void {
  // Somebody else handles this signal (a dev runner draining its services): they will stop what
  // they started or call process.exit, which runs the 'exit' hook. Only when we are alone do we
  // restore the default behaviour, which is to die, after cleaning up.
  if (process.listenerCount(signal) > 1) return;
  runAll();
  process.removeListener(signal, onSignal);
  process.kill(process.pid, signal);
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", runAll);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
}

/** Registers a synchronous cleanup to run if the process exits first; returns its unregister function. */
export function onProcessExit(cleanup: Cleanup): () => void {
  install();
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}
