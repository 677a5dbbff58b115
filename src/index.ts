// Basalt as a library (`basalt`): what the command line does, callable from TypeScript run with tsx
// (the package ships its sources; there is no build step). The contract is `basalt/contract`.
export { buildAppliance } from "./build/build.js";
export { loadAppliance } from "./definition/load.js";
export { ConflictError, NotFoundError, UserError } from "./errors.js";
export { Fleet } from "./fleet/fleet.js";
export { createPlan, renderTree, writePlan } from "./generator/plan.js";
export { inspectImage } from "./inspect/inspect.js";
export { createRelease } from "./release/release.js";
export { createReporter } from "./report/reporter.js";
export { createServer, openFleet } from "./server/server.js";
