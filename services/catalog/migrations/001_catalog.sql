-- Products on sale (and, soft-deleted, those taken off sale: orders keep their lines).
-- `stock` is the units still for sale: reserved units are already taken out of it.
CREATE TABLE products (
  id uuid PRIMARY KEY,
  name text NOT NULL,
  description text NOT NULL DEFAULT '',
  category text NOT NULL DEFAULT '',
  price_minor bigint NOT NULL CHECK (price_minor >= 0),
  currency text NOT NULL,
  stock int NOT NULL CHECK (stock >= 0),
  low_stock_threshold int NOT NULL DEFAULT 0 CHECK (low_stock_threshold >= 0),
  image_url text NOT NULL DEFAULT '',
  version bigint NOT NULL DEFAULT 1,
  deleted boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  -- Full-text search: the name weighs more than the description. 'english' stems, so "mugs"
  -- finds "mug".
  search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english', name), 'A') || setweight(to_tsvector('english', description), 'B')
  ) STORED
);
CREATE INDEX products_search ON products USING gin (search) WHERE NOT deleted;
-- ListProducts' keysets: newest (created_at, id) and price (price_minor, id).
CREATE INDEX products_newest ON products (created_at DESC, id DESC) WHERE NOT deleted;
CREATE INDEX products_price ON products (price_minor, id) WHERE NOT deleted;
CREATE INDEX products_category ON products (category, created_at DESC, id DESC) WHERE NOT deleted;

-- One row per order id that ever reserved or released: the idempotency key of ReserveStock.
-- reserved → committed | released | expired; committed → released. A released or expired
-- order id refuses a late ReserveStock.
CREATE TABLE reservations (
  order_id uuid PRIMARY KEY,
  state text NOT NULL CHECK (state IN ('reserved', 'committed', 'released', 'expired')),
  expire_time timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- The expiry worker's queue.
CREATE INDEX reservations_due ON reservations (expire_time) WHERE state = 'reserved';

-- The lines of a reservation with the product's name and price when reserved (the order's
-- snapshot), in the order of the request.
CREATE TABLE reservation_lines (
  order_id uuid NOT NULL REFERENCES reservations ON DELETE CASCADE,
  line_no int NOT NULL,
  product_id uuid NOT NULL,
  quantity int NOT NULL CHECK (quantity > 0),
  name text NOT NULL,
  price_minor bigint NOT NULL,
  currency text NOT NULL,
  PRIMARY KEY (order_id, line_no)
);

-- The stock ledger: every change of a product's stock, written in the transaction that makes
-- it. `seq` is taken while the product's row is locked, so per product it is the order in which
-- the changes happened, and stock_after follows from the one before.
CREATE TABLE stock_movements (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  seq bigserial NOT NULL UNIQUE,
  product_id uuid NOT NULL,
  delta int NOT NULL,
  stock_after int NOT NULL,
  kind text NOT NULL CHECK (kind IN ('initial', 'adjustment', 'reservation', 'release', 'expiry')),
  reason text NOT NULL DEFAULT '',
  order_id uuid,
  actor_id text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_movements_product ON stock_movements (product_id, seq DESC);
