CREATE TABLE transactions (
  id bigserial PRIMARY KEY,
  amount numeric(12,2) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
