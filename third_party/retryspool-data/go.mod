module schneider.vip/retryspool/storage/data

go 1.21
