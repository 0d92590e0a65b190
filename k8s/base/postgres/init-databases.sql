-- One database per service (each owns its schema and migrations). Run on first start only.
CREATE DATABASE protomesh_auth;
CREATE DATABASE protomesh_user;
CREATE DATABASE protomesh_notify;
CREATE DATABASE protomesh_otp;
CREATE DATABASE protomesh_catalog;
CREATE DATABASE protomesh_orders;
CREATE DATABASE protomesh_chat;
