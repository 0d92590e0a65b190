import {
  OrderCancelledSchema,
  OrderPlacedSchema,
  OrderStatusChangedSchema,
} from "@protomesh/contracts/orders/v1/events_pb";
import {
  addEvent,
  type Cursor,
  type Page,
  type Pool,
  type Tx,
  toPage,
  withTransaction,
} from "@protomesh/platform";
import { toOrderCancelled, toOrderPlaced, toOrderStatusChanged } from "./convert.ts";
import {
  ACCOUNT_DELETED_REASON,
  CANCELLABLE,
  type CancelledBy,
  EXPIRED_REASON,
  type Move,
  type OrderLineRecord,
  type OrderRecord,
  type OrderState,
  type StockState,
} from "./order-model.ts";

/** ListOrders' filters; undefined means any. */
export interface OrderFilter {
  userId?: string | undefined;
  status?: OrderState | undefined;
}

/** What opening (or finding) the draft of a user's idempotency key found. */
export type Opened =
  | { kind: "draft"; id: string; fingerprint: string; fresh: boolean }
  | { kind: "placed"; order: OrderRecord; fingerprint: string };

/** Catalog's answer to CommitStock for one order: kept for good, or no longer held. */
export type CommitOutcome = "committed" | "lost";

interface LineJson {
  product_id: string;
  name: string;
  quantity: number;
  unit_price_minor: string;
  line_total_minor: string;
}

interface Row {
  id: string;
  user_id: string | null;
  email: string;
  status: OrderState;
  stock: StockState;
  currency: string;
  total_minor: string;
  cancel_reason: string;
  cancelled_by: CancelledBy | "";
  created_at: Date;
  updated_at: Date;
  lines_fingerprint: string;
  lines: LineJson[];
}

/** An order with its lines, in one round trip (bigints as text: JSON numbers would round). */
const ORDER_COLUMNS = `o.id, o.user_id, o.email, o.status, o.stock, o.currency,
    o.total_minor::text AS total_minor, o.cancel_reason, o.cancelled_by, o.created_at, o.updated_at,
    o.lines_fingerprint,
    COALESCE((SELECT json_agg(json_build_object(
        'product_id', l.product_id, 'name', l.name, 'quantity', l.quantity,
        'unit_price_minor', l.unit_price_minor::text, 'line_total_minor', l.line_total_minor::text)
      ORDER BY l.position) FROM order_lines l WHERE l.order_id = o.id), '[]'::json) AS lines`;
const SELECT_ORDER = `SELECT ${ORDER_COLUMNS} FROM orders o`;

const toRecord = (r: Row): OrderRecord => ({
  id: r.id,
  userId: r.user_id ?? "",
  email: r.email,
  status: r.status,
  stock: r.stock,
  lines: r.lines.map((l) => ({
    productId: l.product_id,
    name: l.name,
    quantity: l.quantity,
    unitPriceMinor: BigInt(l.unit_price_minor),
    lineTotalMinor: BigInt(l.line_total_minor),
  })),
  currency: r.currency,
  totalMinor: BigInt(r.total_minor),
  cancelReason: r.cancel_reason,
  cancelledBy: r.cancelled_by,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/**
 * Changes an order's status (its row locked by the caller's transaction) and writes the event
 * of that change: OrderCancelled for a cancellation, OrderStatusChanged for any other move.
 */
async function applyMove(tx: Tx, current: OrderRecord, move: Move): Promise<OrderRecord> {
  const { rows } = await tx.query<{ updated_at: Date }>(
    `UPDATE orders SET status = $2, cancel_reason = $3, cancelled_by = $4, stock = COALESCE($5, stock),
       updated_at = clock_timestamp()
     WHERE id = $1 RETURNING updated_at`,
    [current.id, move.to, move.reason ?? current.cancelReason, move.by ?? current.cancelledBy, move.stock],
  );
  const order: OrderRecord = {
    ...current,
    status: move.to,
    stock: move.stock ?? current.stock,
    cancelReason: move.reason ?? current.cancelReason,
    cancelledBy: move.by ?? current.cancelledBy,
    updatedAt: rows[0]?.updated_at ?? new Date(),
  };
  if (move.to === "cancelled") {
    await addEvent(tx, OrderCancelledSchema, toOrderCancelled(order, current.status, move.by ?? "system"));
  } else {
    await addEvent(tx, OrderStatusChangedSchema, toOrderStatusChanged(order, current.status));
  }
  return order;
}

/** Orders and their lines in PostgreSQL. */
export function createPgOrderStore(pool: Pool) {
  /** Runs fn on up to `limit` rows that `where` selects, locked (SKIP LOCKED) in one transaction. */
  const claim = <T>(
    where: string,
    params: unknown[],
    limit: number,
    fn: (rows: Row[], tx: Tx) => Promise<T>,
  ) =>
    withTransaction(pool, async (tx) => {
      const { rows } = await tx.query<Row>(
        `${SELECT_ORDER} WHERE ${where} ORDER BY o.updated_at LIMIT ${Number(limit)} FOR UPDATE OF o SKIP LOCKED`,
        params,
      );
      return fn(rows, tx);
    });

  // The statements every order runs are named, so each connection parses and plans them once.
  return {
    /**
     * Opens the draft of a user's idempotency key (`fresh`), or finds what the key already has:
     * its draft (touched, so the sweeper leaves it to this attempt) or its placed order. Two
     * racing calls get one row: the unique index makes the second one's insert the touch.
     * A draft being swept is waited for; once deleted, the insert goes through afresh.
     */
    async openDraft(d: { id: string; userId: string; key: string; fingerprint: string }): Promise<Opened> {
      const { rows } = await pool.query<{ id: string; lines_fingerprint: string }>({
        name: "open-draft",
        text: `INSERT INTO orders (id, user_id, idempotency_key, lines_fingerprint, status)
         VALUES ($1, $2, $3, $4, 'draft')
         ON CONFLICT (user_id, idempotency_key) DO UPDATE SET updated_at = clock_timestamp()
           WHERE orders.status = 'draft'
         RETURNING id, lines_fingerprint`,
        values: [d.id, d.userId, d.key, d.fingerprint],
      });
      const draft = rows[0];
      if (draft)
        return {
          kind: "draft",
          id: draft.id,
          fingerprint: draft.lines_fingerprint,
          fresh: draft.id === d.id,
        };
      // The key's order is placed: placed orders are never deleted, so it is there.
      const placed = await pool.query<Row>(
        `${SELECT_ORDER} WHERE o.user_id = $1 AND o.idempotency_key = $2`,
        [d.userId, d.key],
      );
      const row = placed.rows[0];
      if (!row) throw new Error("an idempotency key's order vanished");
      return { kind: "placed", order: toRecord(row), fingerprint: row.lines_fingerprint };
    },

    /**
     * Turns a draft into a PENDING order with its price snapshot and writes OrderPlaced, in one
     * transaction. Undefined when the draft is gone or no longer a draft (another call of the
     * same key placed it, or gave it up), or its buyer's account was deleted meanwhile.
     */
    async place(
      id: string,
      p: { email: string; currency: string; totalMinor: bigint; lines: OrderLineRecord[] },
    ): Promise<OrderRecord | undefined> {
      return withTransaction(pool, async (tx) => {
        // The lines go in with the same statement, only when the draft was there to place.
        const { rows } = await tx.query<Row>({
          name: "place-order",
          text: `WITH o AS (
             UPDATE orders o SET status = 'pending', email = $2, currency = $3, total_minor = $4,
               created_at = t.at, updated_at = t.at
             FROM (SELECT clock_timestamp() AS at) t
             WHERE o.id = $1 AND o.status = 'draft' AND o.user_id IS NOT NULL
             RETURNING o.*
           ), l AS (
             INSERT INTO order_lines (order_id, position, product_id, name, quantity, unit_price_minor, line_total_minor)
             SELECT o.id, x.pos, x.product_id, x.name, x.quantity, x.unit, x.total
             FROM o, unnest($5::uuid[], $6::text[], $7::int[], $8::bigint[], $9::bigint[])
               WITH ORDINALITY AS x(product_id, name, quantity, unit, total, pos)
           )
           SELECT o.id, o.user_id, o.email, o.status, o.stock, o.currency, o.total_minor::text AS total_minor,
             o.cancel_reason, o.cancelled_by, o.created_at, o.updated_at, o.lines_fingerprint, '[]'::json AS lines
           FROM o`,
          values: [
            id,
            p.email,
            p.currency,
            p.totalMinor.toString(),
            p.lines.map((l) => l.productId),
            p.lines.map((l) => l.name),
            p.lines.map((l) => l.quantity),
            p.lines.map((l) => l.unitPriceMinor.toString()),
            p.lines.map((l) => l.lineTotalMinor.toString()),
          ],
        });
        const row = rows[0];
        if (!row) return undefined;
        const order = { ...toRecord(row), lines: p.lines };
        await addEvent(tx, OrderPlacedSchema, toOrderPlaced(order));
        return order;
      });
    },

    /** Gives up a draft whose reservation catalog refused (nothing was reserved). */
    async dropDraft(id: string): Promise<void> {
      await pool.query("DELETE FROM orders WHERE id = $1 AND status = 'draft'", [id]);
    },

    /** A placed order; undefined for a draft or an unknown id. */
    async get(id: string): Promise<OrderRecord | undefined> {
      const { rows } = await pool.query<Row>(`${SELECT_ORDER} WHERE o.id = $1 AND o.status <> 'draft'`, [id]);
      return rows[0] && toRecord(rows[0]);
    },

    /** One of a user's placed orders; undefined for anyone else's. */
    async getOwned(id: string, userId: string): Promise<OrderRecord | undefined> {
      const { rows } = await pool.query<Row>(
        `${SELECT_ORDER} WHERE o.id = $1 AND o.user_id = $2 AND o.status <> 'draft'`,
        [id, userId],
      );
      return rows[0] && toRecord(rows[0]);
    },

    /** Placed orders matching the filter, newest first, on (created_at, id). */
    async list(filter: OrderFilter, limit: number, after?: Cursor): Promise<Page<OrderRecord>> {
      const params: unknown[] = [limit + 1];
      const where = ["o.status <> 'draft'"];
      if (filter.userId) where.push(`o.user_id = $${params.push(filter.userId)}`);
      if (filter.status) where.push(`o.status = $${params.push(filter.status)}`);
      if (after) {
        where.push(
          `(o.created_at, o.id) < ($${params.push(after.key)}::timestamptz, $${params.push(after.id)}::uuid)`,
        );
      }
      // The cursor keeps created_at as PostgreSQL's text, exact to the microsecond (a JS Date
      // would round it to milliseconds and skip or repeat rows).
      const { rows } = await pool.query<Row & { sort_key: string }>(
        `SELECT ${ORDER_COLUMNS}, o.created_at::text AS sort_key FROM orders o WHERE ${where.join(" AND ")}
         ORDER BY o.created_at DESC, o.id DESC LIMIT $1`,
        params,
      );
      return toPage(rows, limit, toRecord);
    },

    /**
     * Runs `decide` on a placed order (only the owner's when `owner` is given) with its row
     * locked, so two concurrent moves see each other, and applies the move it returns, with its
     * event, in the same transaction. Undefined when there is no such order.
     */
    async change(
      id: string,
      owner: string | undefined,
      decide: (order: OrderRecord) => Move | undefined,
    ): Promise<{ order: OrderRecord; changed: boolean } | undefined> {
      return withTransaction(pool, async (tx) => {
        const params = owner === undefined ? [id] : [id, owner];
        const { rows } = await tx.query<Row>(
          `${SELECT_ORDER} WHERE o.id = $1 AND o.status <> 'draft' ${owner === undefined ? "" : "AND o.user_id = $2"}
           FOR UPDATE OF o`,
          params,
        );
        const row = rows[0];
        if (!row) return undefined;
        const current = toRecord(row);
        const move = decide(current);
        if (!move) return { order: current, changed: false };
        return { order: await applyMove(tx, current, move), changed: true };
      });
    },

    /** Records that catalog committed or lost a placed order's stock (see `settleCommit`). */
    async recordCommit(id: string, outcome: CommitOutcome): Promise<void> {
      if (outcome === "committed") {
        await pool.query({
          name: "record-commit",
          text: "UPDATE orders SET stock = 'committed' WHERE id = $1 AND stock = 'reserved'",
          values: [id],
        });
        return;
      }
      await claim(
        "o.id = $1 AND o.stock = 'reserved' AND o.status NOT IN ('draft', 'cancelled')",
        [id],
        1,
        (rows, tx) => Promise.all(rows.map((r) => settleCommit(tx, toRecord(r), outcome))),
      );
    },

    /** Records that catalog has a cancelled order's units back. */
    async recordRelease(id: string): Promise<void> {
      await pool.query("UPDATE orders SET stock = 'released' WHERE id = $1 AND status = 'cancelled'", [id]);
    },

    /**
     * Locks up to `limit` drafts untouched for `graceS` (every replica sweeps: SKIP LOCKED),
     * lets `release` return each one's stock, and deletes those released. Returns how many
     * it locked and deleted.
     */
    sweepDrafts(graceS: number, limit: number, release: (id: string) => Promise<boolean>) {
      return claim(
        "o.status = 'draft' AND o.updated_at < clock_timestamp() - make_interval(secs => $1)",
        [graceS],
        limit,
        async (rows, tx) => {
          const ok = await Promise.all(rows.map((r) => release(r.id)));
          const done = rows.filter((_, i) => ok[i]).map((r) => r.id);
          if (done.length > 0) await tx.query("DELETE FROM orders WHERE id = ANY($1)", [done]);
          return { claimed: rows.length, done: done.length };
        },
      );
    },

    /**
     * Locks up to `limit` placed orders whose stock is only reserved, asks `commit` for each
     * (undefined: catalog did not answer) and records the outcome. Returns how many it locked,
     * committed, and cancelled because catalog had lost their stock.
     */
    sweepUncommitted(limit: number, commit: (id: string) => Promise<CommitOutcome | undefined>) {
      return claim(
        "o.stock = 'reserved' AND o.status NOT IN ('draft', 'cancelled')",
        [],
        limit,
        async (rows, tx) => {
          const outcomes = await Promise.all(rows.map((r) => commit(r.id)));
          let committed = 0;
          let expired = 0;
          for (const [i, row] of rows.entries()) {
            const outcome = outcomes[i];
            if (!outcome) continue;
            if (await settleCommit(tx, toRecord(row), outcome)) expired++;
            else committed++;
          }
          return { claimed: rows.length, committed, expired };
        },
      );
    },

    /**
     * Locks up to `limit` cancelled orders whose units catalog may still hold, lets `release`
     * return each one's stock, and records those released.
     */
    sweepUnreleased(limit: number, release: (id: string) => Promise<boolean>) {
      return claim("o.status = 'cancelled' AND o.stock <> 'released'", [], limit, async (rows, tx) => {
        const ok = await Promise.all(rows.map((r) => release(r.id)));
        const done = rows.filter((_, i) => ok[i]).map((r) => r.id);
        if (done.length > 0)
          await tx.query("UPDATE orders SET stock = 'released' WHERE id = ANY($1)", [done]);
        return { claimed: rows.length, done: done.length };
      });
    },

    /**
     * Anonymises a deleted account's orders (no user id, no email; lines and totals stay for
     * the shop) and cancels its open ones, with OrderCancelled, in the consumer's transaction.
     * Their stock goes back through the sweeper. Returns how many it cancelled.
     */
    async anonymise(tx: Tx, userId: string): Promise<number> {
      const { rows: ids } = await tx.query<{ id: string }>(
        "UPDATE orders SET user_id = NULL, email = '' WHERE user_id = $1 RETURNING id",
        [userId],
      );
      if (ids.length === 0) return 0;
      const { rows } = await tx.query<Row>(
        `${SELECT_ORDER} WHERE o.id = ANY($1) AND o.status IN ('pending', 'confirmed') FOR UPDATE OF o`,
        [ids.map((r) => r.id)],
      );
      for (const row of rows) {
        await applyMove(tx, toRecord(row), { to: "cancelled", reason: ACCOUNT_DELETED_REASON, by: "system" });
      }
      return rows.length;
    },
  };

  /**
   * Records CommitStock's outcome for a locked order whose stock was only reserved: committed,
   * or lost (the reservation expired or was released) — then the order cannot be fulfilled and
   * is cancelled by the system. Returns true when it cancelled.
   */
  async function settleCommit(tx: Tx, order: OrderRecord, outcome: CommitOutcome): Promise<boolean> {
    if (outcome === "committed") {
      await tx.query("UPDATE orders SET stock = 'committed' WHERE id = $1", [order.id]);
      return false;
    }
    if (CANCELLABLE.includes(order.status)) {
      await applyMove(tx, order, {
        to: "cancelled",
        reason: EXPIRED_REASON,
        by: "system",
        stock: "released",
      });
      return true;
    }
    // Not reached: an order ships only once its stock is committed (adminMove), and only a
    // cancellation releases committed stock. Recorded as it is, so the sweeper moves on.
    await tx.query("UPDATE orders SET stock = 'released' WHERE id = $1", [order.id]);
    return false;
  }
}

export type OrderStore = ReturnType<typeof createPgOrderStore>;
