// Every appliance feature, in render order. Adding a feature: write its module, add it here.
import * as boot from "./boot.js";
import * as consoleScreen from "./console.js";
import * as disk from "./disk.js";
import * as extras from "./extras.js";
import * as health from "./health.js";
import * as hostname from "./hostname.js";
import * as identity from "./identity.js";
import * as initrd from "./initrd.js";
import * as network from "./network.js";
import * as report from "./report.js";
import * as ssh from "./ssh.js";
import * as system from "./system.js";
import * as updates from "./updates.js";
import * as user from "./user.js";
import * as varPartition from "./var.js";

export const featureModules = [
  identity,
  system,
  disk,
  varPartition,
  user,
  ssh,
  network,
  hostname,
  consoleScreen,
  initrd,
  boot,
  health,
  updates,
  report,
  extras,
] as const;

export const features = featureModules.map((m) => m.feature);
