module github.com/avatarfleet/avatarfleet/sfu

go 1.26.8
