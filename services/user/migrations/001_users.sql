CREATE TABLE users (
  id uuid PRIMARY KEY,
  -- Lower-cased by auth before it reaches us; unique so one email is one person.
  email text NOT NULL UNIQUE,
  display_name text NOT NULL,
  bio text NOT NULL DEFAULT '',
  avatar_url text NOT NULL DEFAULT '',
  phone text NOT NULL DEFAULT '',
  locale text NOT NULL DEFAULT '',
  roles text[] NOT NULL DEFAULT '{user}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
