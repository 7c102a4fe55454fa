# agent-sts container image.
#
#   docker build -t agent-sts .
#   docker run -p 8080:8080 -e DATABASE_URL=postgres://... -e AGENT_STS_ADMIN_TOKEN=... agent-sts
#
# Configuration comes from environment variables (ISSUER, DATABASE_URL, AGENT_STS_ADMIN_TOKEN,
# AGENT_STS_KEY_ENCRYPTION_KEY, ...). Without DATABASE_URL the embedded database is kept under
# DATA_DIR (/app/data); mount a volume there to keep it.

# --- build: compile the TypeScript sources to dist/ ---
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# npm ci runs patches/apply.mjs after installing (see the README's Dependency patches).
COPY patches ./patches
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build

# --- runtime: production dependencies and the compiled server only ---
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
COPY patches ./patches
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# A shell reads HEAP_GROWING_PERCENT as `npm start` does (unset or empty: 100; see the README's Configuration)
# and execs node, which stays PID 1.
CMD ["sh", "-c", "exec node --heap-growing-percent=${HEAP_GROWING_PERCENT:-100} dist/src/cli/main.js serve"]
