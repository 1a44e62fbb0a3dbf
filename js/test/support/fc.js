// fast-check with a fixed seed, so a run is reproducible; FC_SEED=<n> explores others.
import fc from "fast-check";

fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 1307), numRuns: 200 });

export default fc;
