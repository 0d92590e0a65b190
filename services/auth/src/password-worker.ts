// Runs in a worker thread: bcrypt is pure CPU, so it must never run on a service's event loop.
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import bcrypt from "bcryptjs";

// Lower this thread's scheduling priority (Linux: a thread id works as a pid for setpriority),
// so that on a busy machine the event loops serving other requests get the CPU first and a
// flood of sign-ins slows sign-ins, not everything else.
try {
  const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
  if (Number.isInteger(tid)) setPriority(tid, 10);
} catch {
  // Not Linux, or not permitted: run at normal priority.
}

export type PasswordTask =
  | { op: "hash"; password: string; cost: number }
  | { op: "verify"; password: string; hash: string };

/** Hashes or verifies one password. */
export default function run(task: PasswordTask): Promise<string | boolean> {
  return task.op === "hash"
    ? bcrypt.hash(task.password, task.cost)
    : bcrypt.compare(task.password, task.hash);
}
