-- Orders, from the draft that reserves their stock to delivery or cancellation. A draft (an
-- order whose stock is being reserved in catalog) is internal: never listed, never returned.
CREATE TABLE orders (
  id uuid PRIMARY KEY,
  -- NULL once the buyer deleted their account: the order stays for the shop, anonymised.
  user_id uuid,
  -- The buyer's address when they ordered, for the order's emails; '' once anonymised.
  email text NOT NULL DEFAULT '',
  idempotency_key text NOT NULL,
  -- sha256 of the requested lines (product:quantity, sorted): the same key with other lines
  -- is refused.
  lines_fingerprint text NOT NULL,
  status text NOT NULL
    CHECK (status IN ('draft', 'pending', 'confirmed', 'shipped', 'delivered', 'cancelled')),
  -- Where the order's units stand in catalog: reserved (for a draft: perhaps), committed, or
  -- released back to stock. The sweeper moves it until it matches the status.
  stock text NOT NULL DEFAULT 'reserved' CHECK (stock IN ('reserved', 'committed', 'released')),
  currency text NOT NULL DEFAULT '',
  total_minor bigint NOT NULL DEFAULT 0 CHECK (total_minor >= 0),
  cancel_reason text NOT NULL DEFAULT '',
  cancelled_by text NOT NULL DEFAULT '' CHECK (cancelled_by IN ('', 'buyer', 'admin', 'system')),
  -- When it was placed (for a draft: when it was opened).
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- The last change a buyer can see (for a draft: the last attempt that touched it).
  updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- One order per user and idempotency key, also when two calls race.
CREATE UNIQUE INDEX orders_idempotency ON orders (user_id, idempotency_key);

-- ListMyOrders and ListOrders page newest first on (created_at, id).
CREATE INDEX orders_user_newest ON orders (user_id, created_at DESC, id DESC) WHERE status <> 'draft';
CREATE INDEX orders_newest ON orders (created_at DESC, id DESC) WHERE status <> 'draft';
CREATE INDEX orders_status_newest ON orders (status, created_at DESC, id DESC);

-- The sweeper's three kinds of work; each partial index holds only what is still unsettled.
CREATE INDEX orders_drafts ON orders (updated_at) WHERE status = 'draft';
CREATE INDEX orders_uncommitted ON orders (updated_at)
  WHERE stock = 'reserved' AND status NOT IN ('draft', 'cancelled');
CREATE INDEX orders_unreleased ON orders (updated_at) WHERE status = 'cancelled' AND stock <> 'released';

-- The lines of a placed order as they were when it was placed (name and price snapshot).
CREATE TABLE order_lines (
  order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
  position smallint NOT NULL,
  product_id uuid NOT NULL,
  name text NOT NULL,
  quantity int NOT NULL CHECK (quantity > 0),
  unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
  line_total_minor bigint NOT NULL CHECK (line_total_minor >= 0),
  PRIMARY KEY (order_id, position)
);
