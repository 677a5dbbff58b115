// The contract between image, server, CLI and tests, for use as a library (`basalt/contract`):
// identifiers, file names, URLs, manifests, reports, rollout options and the version order.
export * from "./artifacts.js";
export * from "./build-manifest.js";
export * from "./ids.js";
export * from "./release-manifest.js";
export * from "./report.js";
export * from "./rollout.js";
export * from "./urls.js";
export * from "./version.js";
