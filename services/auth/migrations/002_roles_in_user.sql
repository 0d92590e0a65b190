-- Roles live in user only: auth reads them with UserService.GetRoles at sign-in and at every
-- refresh, so a role change takes effect at the next refresh.
ALTER TABLE credentials DROP COLUMN roles;
