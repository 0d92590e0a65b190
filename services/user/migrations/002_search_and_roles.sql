-- SearchUsers matches and orders on the lower-cased display name in code-point order (COLLATE
-- "C"): with that collation one plain btree serves the LIKE 'prefix%' range, the ORDER BY and the
-- keyset of the next page, whatever the database's own collation is.
CREATE INDEX users_search ON users ((lower(display_name) COLLATE "C"), id);

-- ListUsers pages newest first on (created_at, id).
CREATE INDEX users_newest ON users (created_at DESC, id DESC);

-- ListUsers' role filter (roles @> ARRAY[role]), e.g. every admin among many users.
CREATE INDEX users_roles ON users USING gin (roles);
