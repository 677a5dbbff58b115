// Storage target mode: the storage-target UKI profile boots into systemd-storagetm, which exports
// the disk over NVMe/TCP; the forwarded port answers the NVMe/TCP handshake.
import { afterAll, expect, inject, it } from "vitest";
import { bootProfileOnce } from "../../harness/boot-entries.js";
import { nvmeTcpHandshake } from "../../harness/nvme-tcp.js";
import { BOOT_TIMEOUT_MS, Scenario } from "../../harness/scenario.js";

const NVME_TCP_PORT = 4420;
const image = inject("sharedImage");
const s = new Scenario("storage-target");
afterAll(() => s.finish());

it("exports the disk over NVMe/TCP when booted into the storage-target profile", async () => {
  const vm = await s.boot("a", image, { ports: [NVME_TCP_PORT] });
  const hostPort = vm.config.forwards[String(NVME_TCP_PORT)] ?? 0;
  const ssh = await s.step("first boot to SSH", () => vm.waitForSsh(BOOT_TIMEOUT_MS));
  await s.step("nothing answers NVMe/TCP in normal operation (the check can fail)", async () => {
    expect(await nvmeTcpHandshake(hostPort)).toBe(false);
  });
  await s.step("select the storage-target profile for one boot", () => bootProfileOnce(ssh, "storage-target"));
  const mark = vm.serialMark();
  await ssh.exec("sudo -n systemctl reboot &").catch(() => undefined);
  ssh.close();
  await s.step("storage target mode starts in the initrd", () =>
    vm.waitForConsole(/Reached target .*Storage Target Mode/, { mark, timeoutMs: BOOT_TIMEOUT_MS }),
  );
  // systemd-storagetm 257 picks its TCP port itself and prints it.
  const port = await s.step("systemd-storagetm exports the disk and says where", async () => {
    const m = await vm.waitForConsole(/storagetm\.[0-9a-f]+\.vda[\s\S]*?Listening on ipv4 \(port (\d+)\)/, { mark, timeoutMs: 120_000 });
    return Number(m[1]);
  });
  await s.step("the NVMe/TCP target answers the handshake", async () => {
    const forwarded = await vm.forward(port);
    const deadline = Date.now() + 60_000;
    while (!(await nvmeTcpHandshake(forwarded))) {
      if (Date.now() > deadline) throw new Error(`no NVMe/TCP ICResp on guest port ${port} within 60 s`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  });
});
