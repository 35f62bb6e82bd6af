#!/usr/bin/perl
# tests/lib/slow-client.pl - hostile HTTP clients for tests, loopback only.
#
#   slow-client.pl hold PORT ADDRS PER-ADDR INTERVAL SECONDS READY-FILE
#     Open PER-ADDR connections from each of ADDRS (a comma list of
#     127.x.y.z addresses) to 127.0.0.1:PORT; on each, start a request head
#     and send one more header line every INTERVAL seconds, never ending
#     it.  A connection the server closes is opened again.  Once every
#     connection was tried, READY-FILE gets "connected N" (N: how many
#     are open).  Gives up after SECONDS; prints "opened N closed M early
#     E", E being those the server closed before their fifth line.  With
#     a last argument "once", a closed connection is not opened again.
#
#   slow-client.pl trickle PORT LINES INTERVAL
#     One request head sent one header line every INTERVAL seconds, LINES
#     lines in all, then the blank line.  Prints "cut after N lines" when
#     the server closed the connection first, else "sent all" and the
#     answer's status line.
#
#   slow-client.pl raw PORT SECONDS
#     Send standard input's bytes as they are, then wait up to SECONDS for
#     the server's answer and its close.  Prints the status line (or "no
#     answer") and then "closed" or "still open".
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

$SIG{PIPE} = 'IGNORE';
my $mode = shift @ARGV // '';

sub connect_from {
  my ($port, $from) = @_;
  my %o = (PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2);
  $o{LocalAddr} = $from if defined $from;
  return IO::Socket::INET->new (%o);
}

sub head_start { "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" }

if ($mode eq 'hold') {
  my ($port, $addrs, $per, $interval, $seconds, $ready, $once) = @ARGV;
  my $reopen = !(defined $once && $once eq 'once');
  my @from = split /,/, $addrs;
  for (@from) { die "not a loopback address: $_\n" unless /^127\.\d+\.\d+\.\d+$/ }
  die "at most 1000 connections\n" if @from * $per > 1000;
  my $end = time + $seconds;
  my (@conns, $opened, $closed, $early);
  $opened = $closed = $early = 0;
  my $open = sub {
    my ($slot) = @_;
    my $s = connect_from ($port, $slot->{from});
    $slot->{s} = undef;
    return unless $s;
    $s->blocking (0);
    return unless defined syswrite ($s, head_start ());
    $slot->{s} = $s;
    $slot->{n} = 0;
    $opened++;
  };
  for my $a (@from) {
    for (1 .. $per) {
      my $slot = { from => $a };
      $open->($slot);
      push @conns, $slot;
    }
  }
  my $live = grep { $_->{s} } @conns;
  open my $fh, '>', "$ready.tmp" or die "$ready: $!\n";
  print $fh "connected $live\n";
  close $fh;
  rename "$ready.tmp", $ready;
  while (time < $end) {
    for my $c (@conns) {
      if ($c->{s}) {
        my $buf;
        my $r = sysread ($c->{s}, $buf, 4096);
        # EOF, a reset, or an answer: the server let go of it.
        if (defined $r || (!defined $r && !$!{EAGAIN} && !$!{EWOULDBLOCK})) {
          close $c->{s};
          $c->{s} = undef;
          $closed++;
          $early++ if $c->{n} < 5;
          next;
        }
        $c->{n}++;
        unless (defined syswrite ($c->{s}, "X-Slow-$c->{n}: a\r\n")) {
          close $c->{s};
          $c->{s} = undef;
          $closed++;
        }
      }
      elsif ($reopen) {
        $open->($c);
      }
    }
    sleep $interval;
  }
  print "opened $opened closed $closed early $early\n";
  exit 0;
}

if ($mode eq 'trickle') {
  my ($port, $lines, $interval) = @ARGV;
  my $s = connect_from ($port, undef) or die "connect: $!\n";
  my $sel = IO::Select->new ($s);
  syswrite ($s, head_start ()) or die "write: $!\n";
  for my $n (1 .. $lines) {
    # The server closing the connection shows as readable (EOF).
    if ($sel->can_read ($interval)) {
      my $buf = '';
      my $r = sysread ($s, $buf, 4096);
      print "cut after ", $n - 1, " lines\n";
      exit 0;
    }
    unless (defined syswrite ($s, "X-Slow-$n: a\r\n")) {
      print "cut after ", $n - 1, " lines\n";
      exit 0;
    }
  }
  syswrite ($s, "\r\n");
  my $buf = '';
  sysread ($s, $buf, 4096) if $sel->can_read (10);
  my ($status) = split /\r\n/, $buf // '';
  print "sent all\n", ($status // 'no answer'), "\n";
  exit 0;
}

if ($mode eq 'raw') {
  my ($port, $seconds) = @ARGV;
  local $/;
  my $data = <STDIN> // '';
  my $s = connect_from ($port, undef) or die "connect: $!\n";
  my $sel = IO::Select->new ($s);
  syswrite ($s, $data);
  my $end = time + $seconds;
  my ($got, $closed) = ('', 0);
  while ((my $left = $end - time) > 0) {
    last unless $sel->can_read ($left);
    my $buf;
    my $r = sysread ($s, $buf, 65536);
    if (!$r) { $closed = 1; last }
    $got .= $buf;
  }
  my ($status) = split /\r\n/, $got;
  my ($body) = $got =~ /\r\n\r\n(.*)\z/s;
  print $status // 'no answer', "\n", $closed ? "closed" : "still open", "\n";
  print $body // '', "\n";
  exit 0;
}

die "usage: slow-client.pl hold|trickle|raw ...\n";
