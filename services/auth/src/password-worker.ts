// Runs in a worker thread: bcrypt is pure CPU, so it must never run on a service's event loop.
import bcrypt from "bcryptjs";

export type PasswordTask =
  | { op: "hash"; password: string; cost: number }
  | { op: "verify"; password: string; hash: string };

/** Hashes or verifies one password. */
export default function run(task: PasswordTask): Promise<string | boolean> {
  return task.op === "hash"
    ? bcrypt.hash(task.password, task.cost)
    : bcrypt.compare(task.password, task.hash);
}
