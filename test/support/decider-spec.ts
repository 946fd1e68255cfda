// The decider spec is part of the package's testing entry (memledger/testing); tests import it from here.
export * from "../../testing/decider-spec.js";
