// The stock Better Auth client (better-auth 1.7.25, `createAuthClient` + `organizationClient`)
// driven against Igris: sign-up, sign-in, get-session, create organization, set active,
// invite, the invitee signs up and accepts, list members, sign-out, get-session is null.
// Adapted from docs/better-auth-compat.md, Appendix A.
//
//   BASE_URL=http://127.0.0.1:8000/api/auth RUN_ID=abc123 node client-flow.mjs
//
// Prints each step, then `RESULT {...}` (what tests/compat/test_better_auth_client.py checks in
// the database) and `ALL OK`. Exits 1 on the first failed step.
import { createAuthClient } from "better-auth/client";
import { organizationClient } from "better-auth/client/plugins";

const BASE_URL = process.env.BASE_URL || "http://127.0.0.1:8000/api/auth";
// Node's fetch sends `Sec-Fetch-Mode: cors` but no Origin, and sign-up and sign-in then demand
// a trusted Origin (the server's own origin always is). Browsers send Origin themselves.
const ORIGIN = process.env.ORIGIN || new URL(BASE_URL).origin;
const run = (process.env.RUN_ID || Date.now().toString(36)).toLowerCase();
const alice = { email: `alice-${run}@example.com`, password: "correct-horse-1", name: "Alice" };
const bob = { email: `bob-${run}@example.com`, password: "battery-staple-2", name: "Bob" };

// One client per user; each keeps its own bearer token (Node has no cookie jar).
function makeClient() {
  const state = { token: null };
  const client = createAuthClient({
    baseURL: BASE_URL,
    plugins: [organizationClient()],
    fetchOptions: {
      // Capture the token the bearer plugin returns on responses that set the session cookie.
      onSuccess(ctx) {
        const token = ctx.response.headers.get("set-auth-token");
        if (token) state.token = token;
      },
      // Send it on every request (better-fetch adds `Authorization: Bearer <token>`).
      auth: { type: "Bearer", token: () => state.token ?? undefined },
      headers: { Origin: ORIGIN },
    },
  });
  return { client, state };
}

function check(step, { data, error }) {
  if (error) {
    console.error(`FAIL ${step}:`, JSON.stringify(error));
    process.exit(1);
  }
  console.log(`ok   ${step}:`, JSON.stringify(data));
  return data;
}

function expect(condition, message) {
  if (!condition) {
    console.error(`FAIL ${message}`);
    process.exit(1);
  }
}

const A = makeClient();
const B = makeClient();

check("alice sign-up", await A.client.signUp.email(alice));
A.state.token = null; // prove that sign-in works on its own
const signIn = check(
  "alice sign-in",
  await A.client.signIn.email({ email: alice.email, password: alice.password }),
);
expect(A.state.token, "no set-auth-token header on sign-in");
expect(signIn.user?.email === alice.email, "sign-in returned the wrong user");

const session = check("alice get-session", await A.client.getSession());
expect(session?.user?.email === alice.email, "get-session returned the wrong user");
expect(session.session.expiresAt instanceof Date, "get-session dates are not ISO strings");

const org = check(
  "create organization",
  await A.client.organization.create({ name: "Acme", slug: `acme-${run}`, metadata: { plan: "pro" } }),
);
expect(org.members?.[0]?.role === "owner", "the creator is not the owner");
expect(org.metadata?.plan === "pro", "metadata did not come back as an object");

const active = check("set active", await A.client.organization.setActive({ organizationId: org.id }));
expect(active?.id === org.id, "set-active returned another organization");

const invitation = check(
  "invite bob",
  await A.client.organization.inviteMember({ email: bob.email, role: "developer", organizationId: org.id }),
);
expect(invitation.status === "pending" && invitation.role === "developer", "unexpected invitation");
expect(invitation.expiresAt instanceof Date, "invitation dates are not ISO strings");

check("bob sign-up", await B.client.signUp.email(bob));
const accepted = check(
  "bob accept invitation",
  await B.client.organization.acceptInvitation({ invitationId: invitation.id }),
);
expect(accepted.invitation.status === "accepted", "the invitation is not accepted");
expect(accepted.member.role === "developer", "bob did not join as a developer");

const { members, total } = check(
  "list members",
  await A.client.organization.listMembers({ query: { organizationId: org.id } }),
);
expect(total === 2 && members.length === 2, `expected 2 members, got ${total}`);
const roles = Object.fromEntries(members.map((member) => [member.user.email, member.role]));
expect(roles[alice.email] === "owner" && roles[bob.email] === "developer", "unexpected roles");

check("alice sign-out", await A.client.signOut());
const after = check("get-session after sign-out", await A.client.getSession());
expect(after === null, "session still valid after sign-out");

console.log(
  "RESULT " +
    JSON.stringify({
      aliceEmail: alice.email,
      bobEmail: bob.email,
      organizationId: org.id,
      slug: org.slug,
      invitationId: invitation.id,
      signedOutSessionId: session.session.id,
    }),
);
console.log("ALL OK");
