%% remote_peer.erl — distributed Erlang's counterparts of troupe-bench's two-node workloads, run
%% by bench/peers/erlang-remote (two nodes on this host, -sname, one cookie):
%%   pingpong N  one process on node a sends a small message to an echo process on node b and
%%               waits for it back, N times -> round trips/s, p50/p99/mean
%%   call N      100 client processes on a, each gen_server:call'ing (5 s timeout) one of 10
%%               gen_servers on b in turn, N calls in all -> calls/s, p50/p99
%% It prints one line per workload like troupe-bench's ("# erlang-remote-pingpong ...").
-module(remote_peer).
-behaviour(gen_server).
-export([run/3, echo/0]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(CALLERS, 100).
-define(SERVERS, 10).

now_ns() -> erlang:monotonic_time(nanosecond).

run(Workload, N, Node) ->
    true = net_kernel:connect_node(Node),
    case Workload of
        pingpong -> pingpong(N, Node);
        call -> call(N, Node)
    end.

%% ---- pingpong --------------------------------------------------------------------------------

echo() ->
    receive
        {From, M} -> From ! {self(), M}, echo();
        stop -> ok
    end.

ping(_, 0, Acc) -> Acc;
ping(E, K, Acc) ->
    T = now_ns(),
    E ! {self(), K},
    receive {E, K} -> ok end,
    ping(E, K - 1, [now_ns() - T | Acc]).

pingpong(N, Node) ->
    E = spawn(Node, ?MODULE, echo, []),
    _ = ping(E, 1000, []), % the connection warmed up
    T0 = now_ns(),
    S = ping(E, N, []),
    Secs = (now_ns() - T0) / 1.0e9,
    E ! stop,
    report("erlang-remote-pingpong", "round trips/s", S, N, Secs).

%% ---- call ------------------------------------------------------------------------------------

init([]) -> {ok, nostate}.
handle_call({echo, K}, _From, St) -> {reply, {ok, K}, St}.
handle_cast(_, St) -> {noreply, St}.

caller(_, 0, Acc) -> Acc;
caller(S, K, Acc) ->
    T = now_ns(),
    {ok, K} = gen_server:call(S, {echo, K}, 5000),
    caller(S, K - 1, [now_ns() - T | Acc]).

call(N, Node) ->
    Servers = [begin {ok, P} = rpc:call(Node, gen_server, start, [?MODULE, [], []]), P end
               || _ <- lists:seq(1, ?SERVERS)],
    Per = N div ?CALLERS,
    Parent = self(),
    T0 = now_ns(),
    Pids = [spawn_link(fun() -> Parent ! {done, self(), caller(S, Per, [])} end)
            || I <- lists:seq(0, ?CALLERS - 1),
               S <- [lists:nth(I rem ?SERVERS + 1, Servers)]],
    All = lists:append([receive {done, P, L} -> L end || P <- Pids]),
    Secs = (now_ns() - T0) / 1.0e9,
    [gen_server:stop(S) || S <- Servers],
    report("erlang-remote-call", "calls/s", All, Per * ?CALLERS, Secs).

%% ---- report ----------------------------------------------------------------------------------

report(Name, Unit, Samples, N, Secs) ->
    S = list_to_tuple(lists:sort(Samples)),
    K = tuple_size(S),
    P50 = element(K div 2 + 1, S) / 1000,
    P99 = element(K * 99 div 100 + 1, S) / 1000,
    Mean = lists:sum(Samples) / K / 1000,
    io:format("{\"bench\":\"~s\",\"value\":~p,\"unit\":\"~s\",\"count\":~p,\"seconds\":~.3f,"
              "\"p50_us\":~.1f,\"p99_us\":~.1f,\"mean_us\":~.1f}~n",
              [Name, round(N / Secs), Unit, N, Secs, P50, P99, Mean]),
    io:format("# ~-22s ~10w ~s  p50 ~.1f us  p99 ~.1f us  mean ~.1f us  (~p in ~.3f s)~n",
              [Name, round(N / Secs), Unit, P50, P99, Mean, N, Secs]).
